// The engine behind the OpenAI-style API, wherever it is hosted (in the page, or in a Worker via worker.js):
// loads a model (configs, tokenizer, chat template, then the GPU pipeline), turns requests into prompts,
// runs one generation at a time (generation.js: a request's n choices one after another), and builds OpenAI
// responses and chunks.

import {
  ContextLengthExceededError,
  InvalidRequestError,
  ModelNotFoundError,
  ModelNotLoadedError,
  WebbuildError,
  DeviceLostError,
} from "./errors.js";
import {
  parseChatRequest,
  parseCompletionRequest,
  checkAgainstModel,
  chatChunk,
  chatCompletion,
  textChunk,
  textCompletion,
  usageChunk,
  makeUsage,
  responseHead,
} from "./openai.js";
import { resolveModel, fetchJson, generationDefaults, stopTokenIds, chatStopStrings, errorText } from "./config.js";
import { TextTokenizer } from "./tokenizer.js";
import { ChatTemplate } from "./chat_template.js";
import { generateChoices } from "./generation.js";
import { addRows, createScores } from "./scoring.js";

/** Most candidates per position scoreTokens returns. */
const MAX_TOP_K = 64;

/**
 * What the engine needs of a model on a device; pipeline.js implements it with tvmjs, tests with fakes.
 * @typedef {object} Pipeline
 * @property {number} contextWindowSize
 * @property {number} prefillChunkSize
 * @property {(ids: number[]) => Promise<Float32Array>} prefill  appends tokens, returns last logits
 * @property {(id: number) => Promise<Float32Array>} decode
 * @property {(ids: number[], onChunk: (logits: Float32Array, start: number, count: number) => void) => Promise<void>}
 *   [verify]  appends tokens, handing over the logits at every position chunk by chunk (batch_verify)
 * @property {() => void} reset  empties the KV cache
 * @property {(n: number) => void | Promise<void>} [popN]  drops the last n tokens from the KV cache, so a
 *   request's next choice reuses the prompt's (without it, the prompt is prefilled again)
 * @property {() => void} dispose
 * @property {boolean} [lost]
 */

/**
 * @typedef {object} ModelInfo
 * @property {string} id
 * @property {string} quantization
 * @property {number} context_window_size
 * @property {number} prefill_chunk_size
 * @property {boolean} shader_f16  whether the adapter has it
 * @property {Record<string, unknown>} adapter  vendor / architecture / description
 * @property {number} load_seconds
 */

/**
 * @typedef {object} ReloadOptions
 * @property {string | null} [model]  variant id to load from a manifest (default: the manifest's choice)
 * @property {string} [baseUrl]  resolves relative URLs (default: the page's location)
 * @property {"cache" | "indexeddb" | "none"} [cacheType]
 * @property {(p: import("./pipeline.js").LoadProgress) => void} [onProgress]
 * @property {AbortSignal} [signal]
 */

/** @returns {number} seconds, monotonic */
const now = () => performance.now() / 1000;

export class Engine {
  /**
   * @param {object} [deps]  injectable for tests; defaults load tvmjs lazily
   * @param {() => Promise<import("./pipeline.js").GpuInfo>} [deps.detectGpu]
   * @param {(args: any) => Promise<Pipeline>} [deps.loadPipeline]
   */
  constructor({ detectGpu, loadPipeline } = {}) {
    this.detectGpu = detectGpu ?? (async () => (await import("./pipeline.js")).detectGpu());
    this.loadPipeline = loadPipeline ?? (async (args) => (await import("./pipeline.js")).ModelPipeline.load(args));
    /** @type {Pipeline | null} */ this.pipeline = null;
    /** @type {ModelInfo | null} */ this.info = null;
    /** @type {TextTokenizer | null} */ this.tokenizer = null;
    /** @type {ChatTemplate | null} */ this.template = null;
    /** @type {import("./openai.js").ModelDefaults} */ this.defaults = {};
    /** @type {Set<number>} */ this.stopIds = new Set();
    /** @type {number | null} */ this.vocabSize = null;
    /** @type {string[]} */ this.chatStops = [];
    /** @type {Record<string, number>} */ this.lastStats = {};
    this.interrupted = false;
    this.lock = Promise.resolve();
    // OpenAI-style namespaces, forwarding to one method each.
    this.chat = { completions: { create: (/** @type {any} */ req) => this.chatCompletion(req) } };
    this.completions = { create: (/** @type {any} */ req) => this.completion(req) };
  }

  /**
   * Loads a model, replacing the current one.
   * @param {string | import("./config.js").Manifest | import("./config.js").ModelRecord} source
   * @param {ReloadOptions} [options]
   * @returns {Promise<ModelInfo>}
   */
  async reload(source, options = {}) {
    const { onProgress = () => {}, signal, model = null, baseUrl, cacheType } = options;
    return this.exclusive(async () => {
      const t0 = now();
      await this.unloadNow();
      const gpu = await this.detectGpu();
      let loaded;
      try {
        loaded = await this.loadParts(source, gpu, { model, baseUrl, signal, cacheType, onProgress });
      } catch (err) {
        gpu.device?.destroy?.(); // the device is ours until a pipeline owns it
        throw err;
      }
      const { record, chatConfig, tokenizer, template, pipeline } = loaded;
      this.pipeline = pipeline;
      this.tokenizer = tokenizer;
      this.template = template;
      this.defaults = generationDefaults(chatConfig);
      this.stopIds = stopTokenIds(chatConfig, tokenizer);
      this.vocabSize = Number.isInteger(chatConfig.vocab_size) ? chatConfig.vocab_size : null;
      this.chatStops = chatStopStrings(chatConfig, tokenizer, this.stopIds);
      this.info = {
        id: record.id,
        quantization: record.quantization,
        context_window_size: pipeline.contextWindowSize,
        prefill_chunk_size: pipeline.prefillChunkSize,
        shader_f16: gpu.hasShaderF16,
        adapter: { ...gpu.info },
        load_seconds: now() - t0,
      };
      return this.info;
    });
  }

  /**
   * Resolves the variant, fetches its configs and tokenizer, then loads the GPU pipeline.
   * @param {Parameters<Engine["reload"]>[0]} source
   * @param {import("./pipeline.js").GpuInfo} gpu
   * @param {ReloadOptions} options
   */
  async loadParts(source, gpu, { model = null, baseUrl, signal, cacheType, onProgress }) {
    const { record } = await resolveModel(source, { model, hasShaderF16: gpu.hasShaderF16, baseUrl, signal });
    const url = (/** @type {string} */ name) => new URL(name, record.model_url).href;
    const [chatConfig, tokenizerJson, tokenizerConfig] = await Promise.all([
      fetchJson(url("mlc-chat-config.json"), "the model config", signal),
      fetchJson(url("tokenizer.json"), "the tokenizer", signal),
      fetchJson(url("tokenizer_config.json"), "the tokenizer config", signal),
    ]);
    const tokenizer = new TextTokenizer(tokenizerJson, tokenizerConfig);
    const template = ChatTemplate.fromTokenizerConfig(tokenizerConfig);
    const pipeline = await this.loadPipeline({ record, gpu, onProgress, signal, cacheType });
    return { record, chatConfig, tokenizer, template, pipeline };
  }

  /**
   * OpenAI chat completion. Validation and context checks throw here; with `stream: true` the result is
   * an async iterator of `chat.completion.chunk` objects.
   *
   * `n` (1..16) asks for that many choices: independent samples of the same prompt, generated one after
   * another (with `seed`, choice i always draws from the same stream; greedy choices are identical).
   * `logprobs: true` gives each choice `logprobs: {content: [{token, logprob, bytes, top_logprobs}]}`, one
   * entry per token of its content, with `top_logprobs` (0..20) alternatives each. Streamed, each choice
   * has its own role chunk, content chunks (carrying the logprobs of their tokens) and finish chunk, under
   * its `index`; the usage chunk comes last.
   * @param {Record<string, any>} request
   * @param {{signal?: AbortSignal}} [options]
   */
  async chatCompletion(request, { signal } = {}) {
    const { tokenizer, info } = this.requireModel();
    const params = parseChatRequest(request, this.defaults);
    this.checkModelName(params.model);
    if (!this.template) {
      throw new InvalidRequestError("This model has no chat template; use completions.create() with a prompt.", {
        param: "messages",
      });
    }
    const promptIds = tokenizer.encode(this.template.render(params.messages));
    params.max_tokens = checkAgainstModel(params, this.limits(), promptIds.length);
    const head = responseHead("chatcmpl", info.id);
    const stops = [...params.stop, ...this.chatStops];
    const include = params.include_usage;

    if (params.stream) {
      const self = this;
      return (async function* chatStream() {
        const role = (/** @type {number} */ index) =>
          chatChunk(head, { role: "assistant", content: "" }, null, include, { index });
        yield role(0); // before waiting for the lock: the reply visibly starts at once
        const run = await self.run(promptIds, params, stops, signal);
        let current = 0;
        for await (const d of run.deltas) {
          if (d.index !== current) yield role((current = d.index));
          yield d.finishReason
            ? chatChunk(head, {}, d.finishReason, include, { index: d.index })
            : chatChunk(head, { content: d.text }, null, include, { index: d.index, logprobs: d.logprobs });
        }
        if (include) yield usageChunk(head, run.result.usage, "chat.completion.chunk");
      })();
    }
    const run = await this.run(promptIds, params, stops, signal);
    const choices = await collectChoices(run.deltas, params, "");
    return chatCompletion(head, choices, run.result.usage);
  }

  /**
   * OpenAI (legacy) text completion over a raw prompt: no chat template; the tokenizer adds BOS if its
   * post-processor says so. `prompt` may also be token ids. `n` as for chat; `logprobs` (0..5) gives each
   * choice `logprobs: {tokens, token_logprobs, top_logprobs, text_offset}` with that many alternatives per
   * token (not with `echo`: the prompt's own log-probabilities are not computed).
   * @param {Record<string, any>} request
   * @param {{signal?: AbortSignal}} [options]
   */
  async completion(request, { signal } = {}) {
    const { tokenizer, info } = this.requireModel();
    const params = parseCompletionRequest(request, this.defaults);
    this.checkModelName(params.model);
    const promptIds =
      typeof params.prompt === "string" ? tokenizer.encode(params.prompt, { addSpecialTokens: true }) : params.prompt;
    params.max_tokens = checkAgainstModel(params, this.limits(), promptIds.length);
    this.checkTokenIds(promptIds, "prompt");
    const head = responseHead("cmpl", info.id);
    const echo = !params.echo
      ? ""
      : typeof params.prompt === "string"
        ? params.prompt
        : tokenizer.decode(params.prompt);
    const include = params.include_usage;

    if (params.stream) {
      const self = this;
      return (async function* completionStream() {
        const start = (/** @type {number} */ index) => textChunk(head, echo, null, include, { index });
        if (echo) yield start(0);
        const run = await self.run(promptIds, params, params.stop, signal);
        let current = 0;
        for await (const d of run.deltas) {
          if (d.index !== current && echo) yield start(d.index);
          current = d.index;
          yield textChunk(head, d.text, d.finishReason, include, { index: d.index, logprobs: d.logprobs });
        }
        if (include) yield usageChunk(head, run.result.usage, "text_completion");
      })();
    }
    const run = await this.run(promptIds, params, params.stop, signal);
    const choices = await collectChoices(run.deltas, params, echo);
    return textCompletion(head, choices, run.result.usage);
  }

  /**
   * Runs token ids through the model and returns logits, for checking the browser build against a
   * reference: the KV cache is emptied, `promptIds` are prefilled (logits after the last one), then each
   * of `decodeIds` is decoded in turn (logits after each). Same code path as generation.
   * @param {number[]} promptIds
   * @param {number[]} [decodeIds]
   * @returns {Promise<Float32Array[]>}  1 + decodeIds.length arrays of vocab_size logits
   */
  async forwardTokens(promptIds, decodeIds = []) {
    const { pipeline } = this.requireModel();
    const all = [...promptIds, ...decodeIds];
    if (promptIds.length === 0) {
      throw new InvalidRequestError("forwardTokens needs a non-empty list of token ids.", { param: "promptIds" });
    }
    this.checkTokenIds(all, "promptIds");
    if (all.length > pipeline.contextWindowSize) {
      throw new ContextLengthExceededError(
        `${all.length} tokens exceed the context window of ${pipeline.contextWindowSize}.`,
        { param: "promptIds" },
      );
    }
    return this.exclusive(() =>
      this.guard(async () => {
        pipeline.reset();
        const out = [await pipeline.prefill(promptIds)];
        for (const id of decodeIds) out.push(await pipeline.decode(id));
        return out;
      }),
    );
  }

  /**
   * Teacher-forced scoring of a whole token sequence: the KV cache is emptied and `tokenIds` run through
   * the model with batch_verify, which yields the logits at every position in one pass per chunk (the
   * same kernels as prefill). Row i is the model's prediction for token i + 1. Use it to check the browser
   * build against a reference (`webbuild verify`), or to compute log-likelihoods and perplexity.
   * @param {number[]} tokenIds
   * @param {{topK?: number, fullLogits?: boolean}} [options]  candidates per position (default 5, at most
   *   64); `fullLogits` also returns every logit (positions x vocab float32: 196 KB a position for a
   *   49152-token vocabulary)
   * @returns {Promise<import("./scoring.js").TokenScores>}
   */
  async scoreTokens(tokenIds, { topK = 5, fullLogits = false } = {}) {
    const { pipeline } = this.requireModel();
    if (!Array.isArray(tokenIds) || tokenIds.length === 0) {
      throw new InvalidRequestError("scoreTokens needs a non-empty list of token ids.", { param: "tokenIds" });
    }
    if (!Number.isInteger(topK) || topK < 1 || topK > MAX_TOP_K) {
      throw new InvalidRequestError(`topK must be an integer from 1 to ${MAX_TOP_K}; got ${topK}.`, {
        param: "topK",
      });
    }
    this.checkTokenIds(tokenIds, "tokenIds");
    if (tokenIds.length > pipeline.contextWindowSize) {
      throw new ContextLengthExceededError(
        `${tokenIds.length} tokens exceed the context window of ${pipeline.contextWindowSize}.`,
        { param: "tokenIds" },
      );
    }
    if (typeof pipeline.verify !== "function") {
      throw new InvalidRequestError("This model pipeline cannot score tokens (no batch_verify).", {
        param: "tokenIds",
      });
    }
    const verify = pipeline.verify.bind(pipeline);
    return this.exclusive(() =>
      this.guard(async () => {
        pipeline.reset();
        /** @type {import("./scoring.js").TokenScores | null} */
        let scores = null;
        await verify(tokenIds, (logits, start, count) => {
          scores ??= createScores(tokenIds.length, logits.length / count, { topK, fullLogits });
          addRows(scores, logits, start, count, tokenIds);
        });
        pipeline.reset(); // the sequence is not a conversation to continue
        return /** @type {import("./scoring.js").TokenScores} */ (scores);
      }),
    );
  }

  /**
   * @param {string} text
   * @param {{addSpecialTokens?: boolean}} [options]
   */
  tokenize(text, options = {}) {
    return this.requireModel().tokenizer.encode(text, options);
  }

  /**
   * @param {import("./chat_template.js").ChatMessage[]} messages
   * @param {{addGenerationPrompt?: boolean}} [options]
   */
  applyChatTemplate(messages, options = {}) {
    this.requireModel();
    if (!this.template) throw new InvalidRequestError("This model has no chat template.", { param: "messages" });
    return this.template.render(messages, options);
  }

  /**
   * Stops the running generation after the current token: its choice finishes with finish_reason "abort",
   * and so do the request's choices not started yet (empty).
   */
  interrupt() {
    this.interrupted = true;
  }

  async resetChat() {
    const { pipeline } = this.requireModel();
    await this.exclusive(async () => pipeline.reset());
  }

  /** @returns {Record<string, number>} timings of the last request (same numbers as usage.extra) */
  runtimeStats() {
    return { ...this.lastStats };
  }

  /** @returns {ModelInfo | null} */
  getModelInfo() {
    return this.info;
  }

  async unload() {
    await this.exclusive(() => this.unloadNow());
  }

  // ---- internals ------------------------------------------------------------------------------------

  async unloadNow() {
    const pipeline = this.pipeline;
    this.pipeline = null;
    this.info = null;
    this.tokenizer = null;
    this.template = null;
    pipeline?.dispose();
  }

  requireModel() {
    if (!this.pipeline || !this.info || !this.tokenizer) {
      throw new ModelNotLoadedError("No model is loaded.", { tip: "Call reload() first (and wait for it)." });
    }
    return { pipeline: this.pipeline, info: this.info, tokenizer: this.tokenizer };
  }

  /** @param {string | null} name */
  checkModelName(name) {
    const id = this.info?.id;
    if (name != null && name !== id) {
      throw new ModelNotFoundError(`Model "${name}" is not loaded; this engine runs "${id}".`, { param: "model" });
    }
  }

  /**
   * Token ids outside the vocabulary would index past the embedding table on the GPU: refuse them here.
   * @param {number[]} ids
   * @param {string} param
   */
  checkTokenIds(ids, param) {
    const limit = this.vocabSize ?? Infinity;
    const bad = ids.find((t) => !Number.isInteger(t) || t < 0 || t >= limit);
    if (bad !== undefined) {
      throw new InvalidRequestError(`Token id ${bad} is not in the vocabulary (0..${limit - 1}).`, { param });
    }
  }

  /** @returns {import("./openai.js").ModelLimits} what checkAgainstModel checks a request against */
  limits() {
    return { contextWindowSize: this.requireModel().pipeline.contextWindowSize, vocabSize: this.vocabSize };
  }

  /**
   * Serializes GPU work: one request (or load) at a time, in call order.
   * @template T
   * @param {() => Promise<T>} fn
   * @returns {Promise<T>}
   */
  exclusive(fn) {
    const result = this.lock.then(fn);
    this.lock = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }

  /**
   * Takes the lock for a whole generation; returns the release function.
   * @returns {Promise<() => void>}
   */
  async acquire() {
    /** @type {() => void} */
    let release = () => {};
    const held = new Promise((resolve) => {
      release = () => resolve(undefined);
    });
    const previous = this.lock;
    this.lock = previous.then(() => held);
    await previous;
    return release;
  }

  /**
   * A failed TVM call can leave the wasm instance unusable, so the model is dropped and must be reloaded.
   * @template T
   * @param {() => Promise<T>} fn
   * @returns {Promise<T>}
   */
  async guard(fn) {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof WebbuildError && !(err instanceof DeviceLostError)) throw err;
      const lost = err instanceof DeviceLostError || this.pipeline?.lost;
      await this.unloadNow();
      if (lost) throw new DeviceLostError("The WebGPU device was lost.", { tip: "Reload the model.", cause: err });
      throw new WebbuildError(`The model runtime failed: ${errorText(err)}`, {
        tip: "Reload the model; if it fails again, report the message.",
        cause: err,
      });
    }
  }

  /**
   * Starts one generation under the lock. `deltas` yields each choice's text deltas and finish (see
   * generation.js); `result.usage` is filled in when `deltas` ends.
   * @param {number[]} promptIds
   * @param {import("./openai.js").GenerationParams} params
   * @param {string[]} stops
   * @param {AbortSignal | undefined} signal
   */
  async run(promptIds, params, stops, signal) {
    /** @type {import("./generation.js").GenerationResult} */
    const result = { usage: makeUsage(promptIds.length, 0) };
    const self = this;
    const release = await this.acquire();
    async function* deltas() {
      try {
        yield* self.generate(promptIds, params, stops, signal, result);
      } finally {
        release();
      }
    }
    return { deltas: deltas(), result };
  }

  /**
   * One generation with the loaded model (see generation.js); records its timings for runtimeStats().
   * @param {number[]} promptIds
   * @param {import("./openai.js").GenerationParams} params
   * @param {string[]} stops
   * @param {AbortSignal | undefined} signal
   * @param {import("./generation.js").GenerationResult} result
   * @returns {AsyncGenerator<import("./generation.js").ChoiceDelta>}
   */
  async *generate(promptIds, params, stops, signal, result) {
    const { pipeline, tokenizer } = this.requireModel();
    this.interrupted = false;
    const model = {
      pipeline,
      tokenizer,
      stopIds: this.stopIds,
      interrupted: () => this.interrupted,
      guard: (/** @type {() => Promise<any>} */ fn) => this.guard(fn),
    };
    yield* generateChoices(model, promptIds, params, stops, signal, result);
    this.lastStats = result.usage.extra ?? {};
  }
}

/**
 * Gathers a non-streamed response's choices from the deltas.
 * @param {AsyncIterable<import("./generation.js").ChoiceDelta>} deltas
 * @param {import("./openai.js").GenerationParams} params
 * @param {string} prefix  text every choice starts with (the echoed prompt)
 * @returns {Promise<import("./openai.js").ChoiceOutput[]>}
 */
async function collectChoices(deltas, params, prefix) {
  /** @type {import("./openai.js").ChoiceOutput[]} */
  const choices = Array.from({ length: params.n }, () => ({
    text: prefix,
    finishReason: "stop",
    logprobs: params.logprobs ? [] : null,
  }));
  for await (const d of deltas) {
    const choice = choices[d.index];
    choice.text += d.text;
    if (d.logprobs) choice.logprobs?.push(...d.logprobs);
    if (d.finishReason) choice.finishReason = d.finishReason;
  }
  return choices;
}

/**
 * An engine running in this thread (no Worker): same API as the worker proxy.
 * @param {Parameters<Engine["reload"]>[0]} source
 * @param {ReloadOptions & {initProgressCallback?: ReloadOptions["onProgress"]}} [options]
 */
export async function CreateEngine(source, options = {}) {
  const engine = new Engine();
  await engine.reload(source, { ...options, onProgress: options.initProgressCallback ?? options.onProgress });
  return engine;
}
