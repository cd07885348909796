// Public API of the webbuild browser runtime (the package's main entry). The page imports only this module;
// the engine, tokenizer, chat template and TVM runtime load inside the Worker, so nothing here imports them
// (a bundler building the page does not meet them either). The package's other entries: "./worker" (the
// worker entry, worker.js), "./host" (startWorker: host the engine in a worker script of your own,
// worker_host.js) and "./engine" (the engine in this thread, engine.js).
//
//   import { CreateWebWorkerEngine } from "webbuild-runtime";        // a site: "./runtime/index.js"
//   const engine = await CreateWebWorkerEngine(
//     new Worker(new URL("./runtime/worker.js", import.meta.url), { type: "module" }),
//     "./manifest.json",
//     { initProgressCallback: ({ phase, loaded, total, text }) => ... },
//   );
//   for await (const chunk of await engine.chat.completions.create({ messages, stream: true })) ...
//
// The worker: a site's runtime/worker.js, or any dedicated worker script that imports the package's
// "./worker" entry (worker.js). A page on another origin embeds a site's model with
//   CreateWebWorkerEngine(createEngineWorker("https://models.example/site/runtime/worker.js"),
//                         "https://models.example/site/manifest.json")
//
// Code written for WebLLM switches by changing the import: CreateWebWorkerMLCEngine(worker, modelId,
// { appConfig, initProgressCallback }) loads modelId from appConfig.model_list (webllm_factory.js says
// what else of WebLLM's arguments it takes).
//
// Several choices and log-probabilities, as in OpenAI's API:
//
//   const res = await engine.chat.completions.create({ messages, n: 3, seed: 1, logprobs: true, top_logprobs: 5 });
//   res.choices[2].message.content;   res.choices[2].logprobs.content[0];  // {token, logprob, bytes, top_logprobs}
//
// Scoring (teacher forcing): the model's prediction at every position of a token sequence, in one pass:
//
//   const ids = await engine.tokenize("The capital of France is Paris.", { addSpecialTokens: true });
//   const s = await engine.scoreTokens(ids, { topK: 5 });     // s.topIds[i * s.topK] = argmax after token i
//   const logLikelihood = s.nextLogprobs.slice(0, -1).reduce((a, b) => a + b, 0);
//   // { fullLogits: true } adds s.logits (positions x vocab float32), as `webbuild verify` uses

import { ENGINE_METHODS, ProtocolClient } from "./protocol.js";
import { webllmReloadArgs } from "./webllm_factory.js";

export {
  WebbuildError,
  InvalidRequestError,
  UnsupportedParameterError,
  ContextLengthExceededError,
  ModelNotFoundError,
  ModelNotLoadedError,
  WebGPUUnavailableError,
  ShaderF16UnsupportedError,
  DeviceLostError,
  ModelLoadError,
  IntegrityError,
  AbortError,
} from "./errors.js";
export { ENGINE_METHODS } from "./protocol.js";
export { webllmAppConfig } from "./config.js";

/**
 * @typedef {import("./types.js").ChatMessage} ChatMessage
 * @typedef {import("./types.js").ChatCompletionRequest} ChatCompletionRequest
 * @typedef {import("./types.js").ChatCompletion} ChatCompletion
 * @typedef {import("./types.js").ChatCompletionChunk} ChatCompletionChunk
 * @typedef {import("./types.js").CompletionRequest} CompletionRequest
 * @typedef {import("./types.js").Completion} Completion
 * @typedef {import("./types.js").CompletionChunk} CompletionChunk
 * @typedef {import("./types.js").Usage} Usage
 * @typedef {import("./types.js").FinishReason} FinishReason
 * @typedef {import("./engine.js").ModelInfo} ModelInfo
 * @typedef {import("./scoring.js").TokenScores} TokenScores
 * @typedef {import("./pipeline.js").LoadProgress} LoadProgress
 * @typedef {import("./webllm_factory.js").MLCEngineConfig} MLCEngineConfig  WebLLM's names, for its factories
 * @typedef {import("./webllm_factory.js").InitProgressReport} InitProgressReport
 * @typedef {import("./config.js").WebLLMAppConfig} AppConfig
 * @typedef {import("./config.js").WebLLMModelRecord} ModelRecord
 */
/**
 * @template {ChatCompletionRequest} R
 * @typedef {import("./types.js").ChatCompletionResult<R>} ChatCompletionResult
 */
/**
 * @template {CompletionRequest} R
 * @typedef {import("./types.js").CompletionResult<R>} CompletionResult
 */

/**
 * @typedef {object} LoadOptions
 * @property {string | null} [model]  variant id from the manifest (default: the manifest's default, or its
 *   f32 variant when the GPU lacks shader-f16)
 * @property {"cache" | "indexeddb" | "none"} [cacheType]  where weights are kept between visits
 * @property {(p: {phase: string, loaded: number, total: number, text: string}) => void} [initProgressCallback]
 *   progress while loading; loaded/total are bytes for the weights
 */

/**
 * The engine in a dedicated Worker, seen from the page. Every ENGINE_METHODS kind is a method returning
 * a promise (reload, chatCompletion, completion, forwardTokens, scoreTokens, tokenize, applyChatTemplate,
 * interrupt, resetChat, runtimeStats, getModelInfo, unload); `chat.completions.create` and
 * `completions.create` follow OpenAI's client. Errors arrive as the runtime's own classes (see errors.js).
 *
 * WebLLM's MLCEngine names work too, so code written for it runs after changing the import:
 * `reload(modelId)` (a variant id of the manifest or appConfig loaded last; `reload()` loads the last model
 * again), `resetChat(keepStats?)`, `interruptGenerate()`, `unload()`, `runtimeStatsText()` ("prefill: X
 * tokens/sec, decoding: Y tokens/sec") and `getMessage()` (the running request's text so far).
 *
 * Multi-turn chats: requests carry the whole conversation, as OpenAI's do; when a prompt extends the tokens
 * in the KV cache (the previous turn's prompt and reply), only the new tokens are prefilled. `usage.
 * prompt_tokens_details.cached_tokens` counts the reused ones (`runtimeStats()`: cached_tokens and
 * prefill_tokens); the replies are the same as from an empty cache.
 *
 * Requests take OpenAI's fields (see openai.js for the accepted set and ranges), among them:
 * - `n` (1..16): that many choices, `choices[i].index === i`, each an independent sample of the prompt,
 *   generated one after another. With `seed`, the same request gives the same n choices (choice i draws
 *   from a stream derived from the seed and i; choice 0 from the seed itself); greedy choices are identical.
 *   `usage` counts the prompt once and the completion tokens of every choice. Streamed, each choice sends its
 *   own role chunk (chat) or echo chunk (completions), deltas and finish chunk under its `index`, one
 *   choice after the other; the usage chunk (`stream_options.include_usage`) comes last. `interrupt()` and
 *   aborting stop every choice.
 * - chat `logprobs: true` with `top_logprobs` (0..20): `choices[i].logprobs = {content: [{token, logprob,
 *   bytes, top_logprobs: [{token, logprob, bytes}]}]}` (null when not asked for); each content chunk carries
 *   the entries of its tokens.
 * - completions `logprobs` (0..5 alternatives): `choices[i].logprobs = {tokens, token_logprobs,
 *   top_logprobs: [{text: logprob}], text_offset}`, chunks likewise for their tokens; not with `echo`.
 * Log-probabilities are natural logs over the whole vocabulary, of the logits after logit_bias and the
 * presence/frequency penalties and before temperature/top_p. One entry per generated token whose text is in
 * the output: the end-of-sequence token and tokens of a stop string have none; a streamed chunk carries the
 * entries of the tokens whose text it completes. `token` is the token decoded alone (a byte of a longer UTF-8
 * character decodes to U+FFFD), `bytes` its UTF-8 encoding, `text_offset` where its text starts in the
 * choice's text, in UTF-16 code units (JS string indices).
 *
 * `scoreTokens(tokenIds, {topK = 5, fullLogits = false})` resolves to a TokenScores (scoring.js): for every
 * position i, the top-k next-token ids and logits, `logsumexp[i]` (log-probability = logit - logsumexp) and
 * `nextLogprobs[i]` (of the given token i + 1), plus all logits when `fullLogits` is set. It runs the
 * library's batch_verify, chunk by chunk, on an emptied KV cache.
 */
export class WebWorkerEngine {
  // Every ENGINE_METHODS kind but reload is forwarded as it is; the constructor makes these from the table,
  // the declarations give them their types.
  /** @type {<R extends ChatCompletionRequest>(request: R) => Promise<ChatCompletionResult<R>>} */ chatCompletion;
  /** @type {<R extends CompletionRequest>(request: R) => Promise<CompletionResult<R>>} */ completion;
  /** @type {(promptIds: number[], decodeIds?: number[]) => Promise<Float32Array[]>} */ forwardTokens;
  /** @type {(tokenIds: number[], options?: {topK?: number, fullLogits?: boolean}) => Promise<TokenScores>} */ scoreTokens;
  /** @type {(promptIds: number[], options?: {decodeSteps?: number}) => Promise<Record<string, any>>} */ profile;
  /** @type {(text: string, options?: {addSpecialTokens?: boolean}) => Promise<number[]>} */ tokenize;
  /** @type {(messages: ChatMessage[], options?: {addGenerationPrompt?: boolean}) => Promise<string>} */ applyChatTemplate;
  /** @type {() => Promise<void>} */ interrupt;
  /** @type {() => Promise<void>} WebLLM's name for interrupt */ interruptGenerate;
  /** @type {(keepStats?: boolean) => Promise<void>} empties the KV cache (and the stats unless keepStats) */ resetChat;
  /** @type {() => Promise<Record<string, number>>} */ runtimeStats;
  /** @type {() => Promise<string>} "prefill: X tokens/sec, decoding: Y tokens/sec" */ runtimeStatsText;
  /** @type {() => Promise<string>} the running (or last) request's text so far */ getMessage;
  /** @type {() => Promise<ModelInfo | null>} */ getModelInfo;
  /** @type {() => Promise<void>} */ unload;

  /** @param {Worker} worker  a module worker running the runtime's worker entry */
  constructor(worker) {
    this.worker = worker;
    this.client = new ProtocolClient(worker);
    for (const kind of Object.keys(ENGINE_METHODS)) {
      if (kind === "reload") continue;
      /** @type {any} */ (this)[kind] = (/** @type {unknown[]} */ ...args) => this.client.call(kind, args);
    }
    /** OpenAI's client shape: `engine.chat.completions.create(request)`. */
    this.chat = { completions: { create: this.chatCompletion } };
    /** `engine.completions.create(request)`: legacy text completions over a raw prompt. */
    this.completions = { create: this.completion };
  }

  /**
   * Loads a model in the worker. Relative URLs are resolved against the page, not the worker script.
   * @param {string | object} [source]  manifest URL, manifest object, or one model record; or, as WebLLM's
   *   `reload(modelId)`, a variant id of the manifest or appConfig loaded last; none: the last model again
   * @param {LoadOptions} [options]
   * @returns {Promise<ModelInfo>}
   */
  reload(source, options = {}) {
    const { initProgressCallback, ...rest } = /** @type {LoadOptions & Record<string, unknown>} */ (options);
    const sendable = Object.fromEntries(
      Object.entries(rest).filter(([, v]) => typeof v !== "function" && !(v instanceof AbortSignal)),
    );
    // The engine resolves a URL against baseUrl, after telling it from a variant id.
    const args = [source, { baseUrl: globalThis.location?.href, ...sendable }];
    return this.client.call("reload", args, { onProgress: initProgressCallback });
  }

  /** Stops the worker (and frees its GPU memory) at once. */
  terminate() {
    this.worker.terminate();
  }
}

/**
 * Starts the engine in `worker` and loads a model.
 * @param {Worker} worker
 * @param {string | object} source  manifest URL (e.g. "./manifest.json"), manifest, or model record
 * @param {LoadOptions} [options]
 * @returns {Promise<WebWorkerEngine>}
 */
export async function CreateWebWorkerEngine(worker, source, options = {}) {
  const engine = new WebWorkerEngine(worker);
  await engine.reload(source, options);
  return engine;
}

/**
 * WebLLM's `CreateWebWorkerMLCEngine(worker, modelId, engineConfig, chatOpts)`, for code written for WebLLM
 * 0.2.86: starts the engine in `worker` (a module worker running the runtime's worker entry, not WebLLM's
 * handler) and loads `modelId` from `engineConfig.appConfig.model_list`. What it takes and what it refuses,
 * and why: webllm_factory.js.
 * @param {Worker} worker
 * @param {string | string[]} modelId  one model_id of the appConfig (several are refused)
 * @param {import("./webllm_factory.js").MLCEngineConfig} [engineConfig]  appConfig is required
 * @param {Record<string, unknown> | Record<string, unknown>[]} [chatOpts]  refused unless empty
 * @returns {Promise<WebWorkerEngine>}
 */
export async function CreateWebWorkerMLCEngine(worker, modelId, engineConfig, chatOpts) {
  const { source, options } = webllmReloadArgs("CreateWebWorkerMLCEngine", modelId, engineConfig, chatOpts);
  return CreateWebWorkerEngine(worker, source, options);
}

/**
 * A module Worker running the engine from `workerUrl` (a site's runtime/worker.js, or your own wrapper).
 * Browsers start a Worker only from a same-origin script, so for a URL on another origin the worker is a
 * one-line wrapper script (a blob: URL, of the page's origin) that imports the runtime's worker entry.
 * That origin must serve runtime/ with CORS (Access-Control-Allow-Origin), as module imports across origins
 * need, and a page with a Content-Security-Policy must allow `worker-src blob:`.
 * @param {string | URL} workerUrl  resolved against the page
 * @returns {Worker}
 */
export function createEngineWorker(workerUrl) {
  const url = new URL(workerUrl, globalThis.location?.href);
  if (url.origin === globalThis.location?.origin) return new Worker(url, { type: "module" });
  const wrapper = new Blob([`import ${JSON.stringify(url.href)};\n`], { type: "text/javascript" });
  return new Worker(URL.createObjectURL(wrapper), { type: "module" });
}
