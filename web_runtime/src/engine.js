// The engine behind the OpenAI-style API, wherever it is hosted (in the page, or in a Worker via worker.js):
// loads a model (configs, tokenizer, chat template, then the GPU pipeline), turns requests into prompts and
// checks them against the model, and runs one GPU job at a time (lock.js). The work itself lives beside it:
// generation.js (a request's n choices), sequence.js (what the KV cache holds, reused by the next request),
// responses.js (OpenAI responses and chunks), scoring.js (teacher forcing). WebLLM's MLCEngine method names
// (reload(modelId), resetChat, interruptGenerate, unload, runtimeStatsText, getMessage) work here too, and
// its factory CreateMLCEngine(modelId, {appConfig, initProgressCallback}) makes one.

import {
  InvalidRequestError,
  ModelNotFoundError,
  ModelNotLoadedError,
  WebbuildError,
  DeviceLostError,
} from "./errors.js";
import { parseChatRequest, parseCompletionRequest, checkAgainstModel, makeUsage, responseHead } from "./openai.js";
import { chatChunks, chatResponse, completionChunks, completionResponse } from "./responses.js";
import { errorText } from "./config.js";
import { loadModel, checkSequence, checkTokenIds, reloadTarget } from "./model.js";
import { generateChoices } from "./generation.js";
import { forwardLogits, scoreSequence, MAX_TOP_K } from "./scoring.js";
import { SerialLock } from "./lock.js";
import { profileSteps } from "./profile.js";
import { requestConstraint } from "./grammar.js";
import { toolFormatFor } from "./tool_calls.js";
import { webllmReloadArgs } from "./webllm_factory.js";

/** @typedef {import("./model.js").Pipeline} Pipeline */

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
    /** @type {import("./model.js").LoadedModel | null} */ this.model = null;
    /** @type {ModelInfo | null} */ this.info = null;
    /** @type {Record<string, number>} */ this.lastStats = {};
    /** the text of the running (or last) request's first choice, for getMessage() */
    this.message = "";
    /** @type {import("./model.js").ModelOrigin | null} where the last model came from, for reload() */
    this.origin = null;
    this.interrupted = false;
    this.lock = new SerialLock();
    // OpenAI-style namespaces, forwarding to one method each.
    this.chat = {
      completions: {
        /** @type {<R extends import("./types.js").ChatCompletionRequest>(request: R) => Promise<import("./types.js").ChatCompletionResult<R>>} */
        create: (request) => this.chatCompletion(request),
      },
    };
    this.completions = {
      /** @type {<R extends import("./types.js").CompletionRequest>(request: R) => Promise<import("./types.js").CompletionResult<R>>} */
      create: (request) => this.completion(request),
    };
  }

  /**
   * Loads a model, replacing the current one. As WebLLM's `reload(modelId)`: a variant id of the manifest
   * (or WebLLM appConfig) loaded last loads that variant from it, and no source reloads the last model
   * (after unload(), or a lost device).
   * @param {import("./model.js").ReloadSource} [source]  manifest (URL or object), variant record, WebLLM
   *   appConfig/record, or a variant id (see above)
   * @param {ReloadOptions} [options]
   * @returns {Promise<ModelInfo>}
   */
  async reload(source, options = {}) {
    return this.lock.run(async () => {
      const t0 = now();
      const [from, opts] = reloadTarget(this.origin, source, options);
      const { onProgress = () => {}, signal, model = null, baseUrl, cacheType } = opts;
      await this.unloadNow();
      const gpu = await this.detectGpu();
      let loaded;
      try {
        loaded = await loadModel(from, gpu, this.loadPipeline, { model, baseUrl, signal, cacheType, onProgress });
      } catch (err) {
        gpu.device?.destroy?.(); // the device is ours until a pipeline owns it
        throw err;
      }
      const variants = loaded.variantIds;
      this.origin = { source: from, options: { baseUrl, cacheType, model: loaded.record.id }, variants };
      this.model = loaded;
      this.info = {
        id: loaded.record.id,
        quantization: loaded.record.quantization,
        context_window_size: loaded.pipeline.contextWindowSize,
        prefill_chunk_size: loaded.pipeline.prefillChunkSize,
        shader_f16: gpu.hasShaderF16,
        adapter: { ...gpu.info },
        load_seconds: now() - t0,
      };
      return this.info;
    });
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
   * @template {import("./types.js").ChatCompletionRequest} R
   * @param {R} request
   * @param {{signal?: AbortSignal}} [options]
   * @returns {Promise<import("./types.js").ChatCompletionResult<R>>}
   */
  async chatCompletion(request, { signal } = {}) {
    const model = this.requireModel();
    const params = parseChatRequest(request, model.defaults);
    this.checkModelName(params.model);
    if (!model.template) {
      throw new InvalidRequestError("This model has no chat template; use completions.create() with a prompt.", {
        param: "messages",
      });
    }
    // Tools the model may call are shown to it; response_format or the calls constrain its output (grammar.js).
    const toolFormat = toolFormatFor(params, model.toolCallFormat, model.record.id);
    const tools = toolFormat ? params.tools : null;
    const promptIds = model.tokenizer.encode(
      model.template.render(params.messages, { extra: params.chat_template_kwargs, tools }),
    );
    params.max_tokens = checkAgainstModel(params, limits(model), promptIds.length);
    const constraint = await requestConstraint(model.grammars, params, toolFormat);
    const head = responseHead("chatcmpl", model.record.id);
    const stops = [...params.stop, ...model.chatStops];
    const start = () => this.run(promptIds, params, stops, signal, constraint);
    if (params.stream) return chatChunks(head, start, params.include_usage, toolFormat);
    return chatResponse(head, await start(), params, toolFormat);
  }

  /**
   * OpenAI (legacy) text completion over a raw prompt: no chat template; the tokenizer adds BOS if its
   * post-processor says so. `prompt` may also be token ids. `n` as for chat; `logprobs` (0..5) gives each
   * choice `logprobs: {tokens, token_logprobs, top_logprobs, text_offset}` with that many alternatives per
   * token (not with `echo`: the prompt's own log-probabilities are not computed).
   * @template {import("./types.js").CompletionRequest} R
   * @param {R} request
   * @param {{signal?: AbortSignal}} [options]
   * @returns {Promise<import("./types.js").CompletionResult<R>>}
   */
  async completion(request, { signal } = {}) {
    const model = this.requireModel();
    const { tokenizer } = model;
    const params = parseCompletionRequest(request, model.defaults);
    this.checkModelName(params.model);
    const promptIds =
      typeof params.prompt === "string" ? tokenizer.encode(params.prompt, { addSpecialTokens: true }) : params.prompt;
    params.max_tokens = checkAgainstModel(params, limits(model), promptIds.length);
    checkTokenIds(model, promptIds, "prompt");
    const head = responseHead("cmpl", model.record.id);
    const echo = !params.echo
      ? ""
      : typeof params.prompt === "string"
        ? params.prompt
        : tokenizer.decode(params.prompt);
    const start = () => this.run(promptIds, params, params.stop, signal);
    if (params.stream) return completionChunks(head, start, echo, params.include_usage);
    return completionResponse(head, await start(), params, echo);
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
    const model = this.requireModel();
    const { pipeline } = model;
    if (!Array.isArray(promptIds) || promptIds.length === 0) {
      throw new InvalidRequestError("forwardTokens needs a non-empty list of token ids.", { param: "promptIds" });
    }
    checkSequence(model, [...promptIds, ...decodeIds], "promptIds");
    return this.outsideGeneration(model, () => forwardLogits(pipeline, promptIds, decodeIds));
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
    const model = this.requireModel();
    const { pipeline } = model;
    if (!Array.isArray(tokenIds) || tokenIds.length === 0) {
      throw new InvalidRequestError("scoreTokens needs a non-empty list of token ids.", { param: "tokenIds" });
    }
    if (!Number.isInteger(topK) || topK < 1 || topK > MAX_TOP_K) {
      throw new InvalidRequestError(`topK must be an integer from 1 to ${MAX_TOP_K}; got ${topK}.`, {
        param: "topK",
      });
    }
    checkSequence(model, tokenIds, "tokenIds");
    if (typeof pipeline.verify !== "function") {
      throw new InvalidRequestError("This model pipeline cannot score tokens (no batch_verify).", {
        param: "tokenIds",
      });
    }
    return this.outsideGeneration(model, () => scoreSequence(pipeline, tokenIds, { topK, fullLogits }));
  }

  /**
   * Where a step's time goes, for `webbuild bench --profile`: prefills `promptIds` and runs `decodeSteps`
   * greedy decode steps through generation's own pipeline calls, per runtime configuration (as shipped,
   * then without GPU sampling, then also without object reuse): wall time split into encoding, sampling,
   * waiting for the GPU and read-back; dispatches (by kernel), passes, submits; GPU time from timestamp
   * queries where the adapter has them. The KV cache is emptied afterwards.
   * @param {number[]} promptIds
   * @param {{decodeSteps?: number}} [options]
   */
  async profile(promptIds, { decodeSteps = 16 } = {}) {
    const model = this.requireModel();
    const { pipeline } = model;
    if (!Array.isArray(promptIds) || promptIds.length === 0) {
      throw new InvalidRequestError("profile needs a non-empty list of token ids.", { param: "promptIds" });
    }
    checkSequence(model, [...promptIds, ...Array(decodeSteps + 8).fill(0)], "promptIds");
    if (!pipeline.profiler) throw new InvalidRequestError("This model pipeline cannot be profiled.");
    return this.outsideGeneration(model, () => profileSteps(pipeline, promptIds, { decodeSteps }));
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
    const { template } = this.requireModel();
    if (!template) throw new InvalidRequestError("This model has no chat template.", { param: "messages" });
    return template.render(messages, options);
  }

  /**
   * Stops the running generation after the current token: its choice finishes with finish_reason "abort",
   * and so do the request's choices not started yet (empty).
   */
  interrupt() {
    this.interrupted = true;
  }

  /** WebLLM's name for interrupt(). */
  interruptGenerate() {
    this.interrupt();
  }

  /**
   * Empties the KV cache, so the next request prefills its whole prompt (requests carry the whole
   * conversation; the cache only saves work). As WebLLM's: the stats are cleared unless `keepStats`.
   * @param {boolean} [keepStats]
   */
  async resetChat(keepStats = false) {
    const { sequence } = this.requireModel();
    await this.lock.run(() => sequence.reset());
    this.message = "";
    if (!keepStats) this.lastStats = {};
  }

  /**
   * @returns {Record<string, number>} timings of the last request (same numbers as usage.extra), and
   *   cached_tokens / prefill_tokens: its prompt tokens found in the KV cache / run through the model
   */
  runtimeStats() {
    return { ...this.lastStats };
  }

  /** @returns {Promise<string>} as WebLLM's: "prefill: X tokens/sec, decoding: Y tokens/sec" (last request) */
  async runtimeStatsText() {
    const { prefill_tokens_per_s: prefill = 0, decode_tokens_per_s: decode = 0 } = this.lastStats;
    return `prefill: ${prefill.toFixed(4)} tokens/sec, decoding: ${decode.toFixed(4)} tokens/sec`;
  }

  /** @returns {Promise<string>} as WebLLM's: the running (or last) request's text so far (its first choice) */
  async getMessage() {
    return this.message;
  }

  /** @returns {ModelInfo | null} */
  getModelInfo() {
    return this.info;
  }

  async unload() {
    await this.lock.run(() => this.unloadNow());
  }

  // ---- internals ------------------------------------------------------------------------------------

  async unloadNow() {
    const pipeline = this.model?.pipeline;
    this.model = null;
    this.info = null;
    pipeline?.dispose();
  }

  /**
   * Runs a job that uses the pipeline on its own (scoring, forwardTokens, the profile) under the lock; it
   * empties the KV cache, so what the cache holds is forgotten.
   * @template T
   * @param {import("./model.js").LoadedModel} model
   * @param {() => Promise<T>} fn
   * @returns {Promise<T>}
   */
  outsideGeneration(model, fn) {
    return this.lock.run(() => {
      model.sequence.forget();
      return this.guard(fn);
    });
  }

  /** @returns {import("./model.js").LoadedModel} */
  requireModel() {
    if (!this.model) {
      throw new ModelNotLoadedError("No model is loaded.", { tip: "Call reload() first (and wait for it)." });
    }
    return this.model;
  }

  /** @param {string | null} name */
  checkModelName(name) {
    const id = this.model?.record.id;
    if (name != null && name !== id) {
      throw new ModelNotFoundError(`Model "${name}" is not loaded; this engine runs "${id}".`, { param: "model" });
    }
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
      const lost = err instanceof DeviceLostError || this.model?.pipeline.lost;
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
   * @param {import("./grammar.js").Constraint | null} [constraint]  what the output follows; disposed at the end
   */
  async run(promptIds, params, stops, signal, constraint = null) {
    /** @type {import("./generation.js").GenerationResult} */
    const result = { usage: makeUsage(promptIds.length, 0) };
    const self = this;
    const release = await this.lock.acquire();
    async function* deltas() {
      try {
        yield* self.generate(promptIds, params, stops, signal, result, constraint);
      } finally {
        constraint?.dispose();
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
   * @param {import("./grammar.js").Constraint | null} [constraint]
   * @returns {AsyncGenerator<import("./generation.js").ChoiceDelta>}
   */
  async *generate(promptIds, params, stops, signal, result, constraint = null) {
    const { pipeline, sequence, tokenizer, stopIds } = this.requireModel();
    this.interrupted = false;
    this.message = "";
    const model = {
      pipeline,
      sequence,
      tokenizer,
      stopIds,
      interrupted: () => this.interrupted,
      guard: (/** @type {() => Promise<any>} */ fn) => this.guard(fn),
    };
    for await (const delta of generateChoices(model, promptIds, params, stops, signal, result, constraint)) {
      if (delta.index === 0) this.message += delta.text;
      yield delta;
    }
    this.lastStats = result.usage.extra ?? {};
  }
}

/**
 * What checkAgainstModel checks a request against.
 * @param {import("./model.js").LoadedModel} model
 * @returns {import("./openai.js").ModelLimits}
 */
function limits(model) {
  return { contextWindowSize: model.pipeline.contextWindowSize, vocabSize: model.vocabSize };
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

/**
 * WebLLM's `CreateMLCEngine(modelId, engineConfig, chatOpts)`, for code written for WebLLM 0.2.86: loads
 * `modelId` from `engineConfig.appConfig.model_list` in an Engine in this thread. What it takes and what it
 * refuses, and why: webllm_factory.js.
 * @param {string | string[]} modelId  one model_id of the appConfig (several are refused)
 * @param {import("./webllm_factory.js").MLCEngineConfig} [engineConfig]  appConfig is required
 * @param {Record<string, unknown> | Record<string, unknown>[]} [chatOpts]  refused unless empty
 * @returns {Promise<Engine>}
 */
export async function CreateMLCEngine(modelId, engineConfig, chatOpts) {
  const { source, options } = webllmReloadArgs("CreateMLCEngine", modelId, engineConfig, chatOpts);
  return CreateEngine(source, options);
}
