// A loaded model: what Engine.reload() fetches for one variant (its configs, tokenizer and chat template),
// what it derives from them (generation defaults, stop tokens and strings, vocabulary size), and the GPU
// pipeline that runs it. Also what a reload without a source (or with WebLLM's modelId) loads, and the
// checks of token ids against a model.

import { ContextLengthExceededError, InvalidRequestError, ModelLoadError } from "./errors.js";
import { resolveModel, generationDefaults, stopTokenIds, chatStopStrings } from "./config.js";
import { variantFiles } from "./cache.js";
import { TextTokenizer } from "./tokenizer.js";
import { ChatTemplate } from "./chat_template.js";
import { KvSequence } from "./sequence.js";
import { Grammars } from "./grammar.js";

/**
 * What the engine needs of a model on a device; pipeline.js implements it with tvmjs, tests with fakes.
 * @typedef {object} Pipeline
 * @property {number} contextWindowSize
 * @property {number} prefillChunkSize
 * @property {(ids: number[]) => Promise<Float32Array>} prefill  appends tokens, returns last logits
 * @property {(id: number) => Promise<Float32Array>} decode
 * @property {(ids: number[], onChunk: (logits: Float32Array, start: number, count: number) => void) => Promise<void>}
 *   [verify]  appends tokens, handing over the logits at every position chunk by chunk (batch_verify)
 * @property {(params: {temperature: number, top_p?: number, logprobs?: boolean | number | null},
 *   constrained?: boolean) => boolean} [canSampleOnGpu]  whether prefillToken/decodeToken can choose tokens
 *   for these settings (and a grammar's bitmask) on the GPU
 * @property {(ids: number[], draw: import("./sampling.js").Draw) => Promise<number>} [prefillToken]  prefill,
 *   then the next token chosen on the GPU
 * @property {(id: number, draw: import("./sampling.js").Draw) => Promise<number>} [decodeToken]
 * @property {(draw: import("./sampling.js").Draw) => Promise<number>} [decodeChosen]  a decode step whose input is
 *   the token the last step chose on the GPU, sent before that token is read back; resolves to its own choice
 * @property {() => void} reset  empties the KV cache
 * @property {(n: number) => void | Promise<void>} [popN]  drops the last n tokens from the KV cache, so a
 *   request's next choice reuses the prompt's (without it, the prompt is prefilled again)
 * @property {() => void} dispose
 * @property {boolean} [lost]
 */

/**
 * @typedef {object} LoadedModel
 * @property {import("./config.js").Variant} record  the manifest's entry for the variant
 * @property {string[]} variantIds  the variants its source lists (a manifest's, an appConfig's models)
 * @property {Pipeline} pipeline
 * @property {KvSequence} sequence  the tokens in the pipeline's KV cache, for reuse across requests
 * @property {TextTokenizer} tokenizer
 * @property {ChatTemplate | null} template  null when tokenizer_config.json has none (completions only)
 * @property {import("./openai.js").ModelDefaults} defaults  sampling defaults from mlc-chat-config.json
 * @property {Set<number>} stopIds  token ids that end generation
 * @property {string[]} chatStops  stop strings chat requests add to their own
 * @property {number | null} vocabSize  null when the config does not say
 * @property {Grammars} grammars  compiles requests' grammars (response_format, tool calls)
 * @property {string | null} toolCallFormat  how the chat template has the model call tools (tool_calls.js
 *   FORMATS), from mlc-chat-config.json; null: the template shows it no tools
 */

/**
 * @typedef {object} LoadOptions
 * @property {string | null} [model]  variant id to load from a manifest (default: the manifest's choice)
 * @property {string} [baseUrl]  resolves relative URLs
 * @property {"cache" | "indexeddb" | "none"} [cacheType]
 * @property {(p: import("./pipeline.js").LoadProgress) => void} onProgress
 * @property {AbortSignal} [signal]
 */

/**
 * Resolves the variant, fetches its configs and tokenizer, then loads the GPU pipeline.
 * @param {Parameters<typeof resolveModel>[0]} source
 * @param {import("./pipeline.js").GpuInfo} gpu
 * @param {(args: any) => Promise<Pipeline>} loadPipeline
 * @param {LoadOptions} options
 * @returns {Promise<LoadedModel>}
 */
export async function loadModel(source, gpu, loadPipeline, { model = null, baseUrl, signal, cacheType, onProgress }) {
  const { record, variantIds } = await resolveModel(source, { model, hasShaderF16: gpu.hasShaderF16, baseUrl, signal });
  // Checked against the manifest's sha256 like the weights: a damaged tokenizer would load and talk nonsense.
  const files = variantFiles(record, cacheType);
  const json = (/** @type {string} */ name) =>
    files.fetchWithCache(new URL(name, record.model_url).href, "json", signal);
  // A manifest lists tokenizer_config.json; a WebLLM model folder may lack it (then: no chat template).
  const optionalJson = (/** @type {string} */ name) =>
    json(name).catch((err) => {
      if (record.files || !(err instanceof ModelLoadError) || err.data.status !== 404) throw err;
      return {};
    });
  const [chatConfig, tokenizerJson, tokenizerConfig] = await Promise.all([
    json("mlc-chat-config.json"),
    json("tokenizer.json"),
    optionalJson("tokenizer_config.json"),
  ]);
  const tokenizer = new TextTokenizer(tokenizerJson, tokenizerConfig);
  const template = ChatTemplate.fromTokenizerConfig(tokenizerConfig);
  const pipeline = await loadPipeline({ record, gpu, onProgress, signal, cacheType });
  const stopIds = stopTokenIds(chatConfig, tokenizer);
  const vocabSize = Number.isInteger(chatConfig.vocab_size) ? chatConfig.vocab_size : null;
  return {
    record,
    variantIds,
    pipeline,
    sequence: new KvSequence(pipeline),
    tokenizer,
    template,
    defaults: generationDefaults(chatConfig),
    stopIds,
    chatStops: chatStopStrings(chatConfig, tokenizer, stopIds),
    vocabSize,
    grammars: new Grammars(tokenizerJson, vocabSize ?? 0, stopIds),
    toolCallFormat: typeof chatConfig.tool_call_format === "string" ? chatConfig.tool_call_format : null,
  };
}

/** @typedef {Parameters<typeof resolveModel>[0]} ReloadSource  manifest (URL or object), variant, WebLLM appConfig/record */

/**
 * @typedef {object} ModelOrigin  where the loaded model came from
 * @property {ReloadSource} source
 * @property {{baseUrl?: string, cacheType?: LoadOptions["cacheType"], model: string}} options  `model`: its variant id
 * @property {string[]} variants  the ids its source lists (a manifest's variants, an appConfig's models)
 */

/**
 * What Engine.reload() loads: `source` as it is; or, for no source or a variant id of the manifest (or
 * appConfig) loaded last (WebLLM's `reload(modelId)`), that source again, with `model` the variant asked for
 * or the last one.
 * @template {object} O
 * @param {ModelOrigin | null} origin
 * @param {ReloadSource | null | undefined} source
 * @param {O & {model?: string | null}} options
 * @returns {[ReloadSource, O & {model?: string | null, baseUrl?: string}]}
 */
export function reloadTarget(origin, source, options) {
  if (source != null && !(typeof source === "string" && origin?.variants.includes(source))) {
    return [source, options];
  }
  if (!origin) {
    throw new InvalidRequestError("reload() needs a manifest URL, a manifest or a model record.", {
      param: "source",
      tip: "Pass the site's manifest.json URL; a variant id or no source reloads from the last one loaded.",
    });
  }
  const model = source ?? options.model ?? origin.options.model;
  return [origin.source, { ...origin.options, ...options, baseUrl: origin.options.baseUrl, model }];
}

/**
 * Token ids outside the vocabulary would index past the embedding table on the GPU: refuse them here.
 * @param {LoadedModel} model
 * @param {number[]} ids
 * @param {string} param
 */
export function checkTokenIds(model, ids, param) {
  const limit = model.vocabSize ?? Infinity;
  const bad = ids.find((t) => !Number.isInteger(t) || t < 0 || t >= limit);
  if (bad !== undefined) {
    throw new InvalidRequestError(`Token id ${bad} is not in the vocabulary (0..${limit - 1}).`, { param });
  }
}

/**
 * A token sequence run as it is (forwardTokens, scoreTokens): ids in the vocabulary, and no longer than
 * the context window.
 * @param {LoadedModel} model
 * @param {number[]} ids
 * @param {string} param
 */
export function checkSequence(model, ids, param) {
  checkTokenIds(model, ids, param);
  const window = model.pipeline.contextWindowSize;
  if (ids.length > window) {
    throw new ContextLengthExceededError(`${ids.length} tokens exceed the context window of ${window}.`, { param });
  }
}
