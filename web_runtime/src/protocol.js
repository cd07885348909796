// The whole message protocol between a page and an engine host (today a dedicated Worker; the same
// messages fit a SharedWorker port or a Service Worker). A call is one request message; the host answers
// with progress messages, then either one `return` / `throw`, or a `stream` marker, `chunk`s and a final
// `return` (or `throw`). Errors cross as plain data and are rebuilt as the same class on the other side.

import { ERROR_CLASSES, WebbuildError, AbortError, asWebbuildError } from "./errors.js";

/**
 * Engine methods callable through the protocol: {kind: what it does}. worker.js dispatches through this
 * table and index.js builds the main-thread proxy from it, so a new method is one line here plus the
 * engine method itself. A host-side method is called as (args: unknown[], ctx: {onProgress, signal}).
 */
export const ENGINE_METHODS = Object.freeze({
  reload:
    "load a model: (source?: manifest URL | Variant | a variant id of the last manifest | none: the last " +
    "model again, options?) -> ModelInfo",
  chatCompletion:
    "(ChatCompletionRequest, with n?, logprobs?, top_logprobs?) -> ChatCompletion (n choices, each with its " +
    "logprobs: {content} or null) | stream of ChatCompletionChunk (one choice index each; logprobs per delta)",
  completion:
    "(CompletionRequest, with n?, logprobs?: 0..5) -> Completion (n choices, each with its logprobs: {tokens, " +
    "token_logprobs, top_logprobs, text_offset} or null) | stream of Completion chunks (one choice index each)",
  forwardTokens: "(promptIds, decodeIds?) -> Float32Array[] of last-position logits (prefill, then each decode)",
  scoreTokens: "(tokenIds, {topK?, fullLogits?}) -> TokenScores: top-k, logsumexp (and logits) at every position",
  profile: "(promptIds, {decodeSteps?}) -> where a prefill and a decode step spend their time, per runtime setting",
  tokenize: "(text, {addSpecialTokens?}) -> number[]",
  applyChatTemplate: "(messages, {addGenerationPrompt?}) -> string",
  interrupt: "() -> void: stop the running generation, all its choices (each finishes with what it has)",
  interruptGenerate: "() -> void: WebLLM's name for interrupt",
  resetChat: "(keepStats?) -> void: clear the KV cache (and the stats unless keepStats)",
  runtimeStats: "() -> {prefill_tokens_per_s, decode_tokens_per_s, cached_tokens, ...} of the last request",
  runtimeStatsText: '() -> "prefill: X tokens/sec, decoding: Y tokens/sec" (WebLLM\'s) of the last request',
  getMessage: "() -> string: the running (or last) request's text so far (its first choice)",
  getModelInfo: "() -> ModelInfo | null",
  unload: "() -> void: free the GPU",
});

/**
 * @typedef {object} SerializedError
 * @property {string} name
 * @property {string} message
 * @property {string} code
 * @property {string} type
 * @property {number} status
 * @property {string | null} param
 * @property {string | null} tip
 * @property {Record<string, unknown>} data
 * @property {string} [stack]
 */

/**
 * @typedef {{kind: string, uuid: string, args: unknown[]}} CallMessage
 * @typedef {{kind: "cancel", uuid: string}} CancelMessage  stop the stream started by call `uuid`
 * @typedef {{kind: "progress", uuid: string, progress: unknown}} ProgressMessage
 * @typedef {{kind: "return", uuid: string, value: unknown}} ReturnMessage
 * @typedef {{kind: "throw", uuid: string, error: SerializedError}} ThrowMessage
 * @typedef {{kind: "stream", uuid: string}} StreamMessage  the call's result is a stream of chunks
 * @typedef {{kind: "chunk", uuid: string, chunk: unknown}} ChunkMessage  one chunk as the engine yields it (a
 *   chat.completion.chunk or text_completion chunk: choices[0] with its index, delta/text, logprobs and
 *   finish_reason; or the usage chunk), structured-cloned
 * @typedef {ProgressMessage | ReturnMessage | ThrowMessage | StreamMessage | ChunkMessage} ReplyMessage
 */

/**
 * @param {unknown} err
 * @returns {SerializedError}
 */
export function serializeError(err) {
  const e = asWebbuildError(err);
  return {
    name: e.name,
    message: e.message,
    code: e.code,
    type: e.type,
    status: e.status,
    param: e.param,
    tip: e.tip,
    data: jsonSafe(e.data),
    stack: e.stack,
  };
}

/**
 * Rebuilds the error thrown on the other side as the same class (WebbuildError if the name is unknown).
 * @param {SerializedError} obj
 * @returns {WebbuildError}
 */
export function deserializeError(obj) {
  const cls = ERROR_CLASSES[obj.name] ?? WebbuildError;
  const err = new cls(obj.message, { param: obj.param, tip: obj.tip, data: obj.data ?? {} });
  // An unknown class keeps the sender's code/type so callers can still branch on them.
  if (cls === WebbuildError) {
    err.code = obj.code ?? err.code;
    err.type = obj.type ?? err.type;
    err.status = obj.status ?? err.status;
  }
  if (obj.stack) err.stack = `${obj.stack}\n    -- rethrown across the worker boundary --`;
  return err;
}

/** @param {Record<string, unknown>} data */
function jsonSafe(data) {
  try {
    return JSON.parse(JSON.stringify(data ?? {}));
  } catch {
    return {};
  }
}

/** @returns {string} */
export function newUuid() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/**
 * A push-to-pull queue: the protocol pushes chunks as messages arrive, the consumer pulls with for-await.
 * @template T
 */
export class AsyncQueue {
  /** @param {() => void} [onCancel] called when the consumer stops early (break / return()) */
  constructor(onCancel) {
    /** @type {T[]} */ this.items = [];
    /** @type {((r: IteratorResult<T>) => void)[]} */ this.waiters = [];
    /** @type {((e: unknown) => void)[]} */ this.rejecters = [];
    /** @type {unknown} */ this.error = undefined;
    this.closed = false;
    this.onCancel = onCancel;
  }

  /** @param {T} item */
  push(item) {
    if (this.closed) return;
    const waiter = this.waiters.shift();
    this.rejecters.shift();
    if (waiter) waiter({ value: item, done: false });
    else this.items.push(item);
  }

  /** @param {unknown} [error] end the stream, with an error to throw after the queued items */
  close(error) {
    if (this.closed) return;
    this.closed = true;
    this.error = error;
    const waiters = this.waiters.splice(0);
    const rejecters = this.rejecters.splice(0);
    if (error !== undefined) rejecters.forEach((reject) => reject(error));
    else waiters.forEach((resolve) => resolve({ value: undefined, done: true }));
  }

  /** @returns {Promise<IteratorResult<T>>} */
  next() {
    if (this.items.length > 0) return Promise.resolve({ value: /** @type {T} */ (this.items.shift()), done: false });
    if (this.closed) {
      if (this.error !== undefined) {
        const error = this.error;
        this.error = undefined; // throw once, then report done
        return Promise.reject(error);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => {
      this.waiters.push(resolve);
      this.rejecters.push(reject);
    });
  }

  /** @returns {Promise<IteratorResult<T>>} */
  return() {
    if (!this.closed) {
      this.items = [];
      this.close();
      this.onCancel?.();
    }
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator]() {
    return this;
  }
}

/**
 * @typedef {object} Port  what the protocol needs of a Worker / MessagePort / worker global scope
 * @property {(msg: unknown) => void} postMessage
 * @property {(type: string, listener: (ev: any) => void) => void} addEventListener
 */

/**
 * Main-thread side: sends calls, matches replies by uuid, turns `stream` replies into async iterators.
 */
export class ProtocolClient {
  /** @param {Port} port */
  constructor(port) {
    this.port = port;
    /** @type {Map<string, {resolve: Function, reject: Function, onProgress?: Function, queue?: AsyncQueue<unknown>}>} */
    this.pending = new Map();
    /** @type {WebbuildError | null} */ this.failed = null;
    port.addEventListener("message", (/** @type {MessageEvent} */ ev) => this.onMessage(ev.data));
    // A worker whose module graph fails to load (a 404 vendor file, a syntax error) only says so here.
    port.addEventListener("error", (/** @type {ErrorEvent} */ ev) => {
      ev.preventDefault?.();
      const detail = ev.message || "the worker script failed to load";
      this.failAll(new WebbuildError(`The engine worker stopped: ${detail}`, { tip: "Reload the page." }));
    });
    port.addEventListener("messageerror", () => {
      this.failAll(new WebbuildError("The engine worker sent a message that could not be read."));
    });
  }

  /** @param {WebbuildError} err */
  failAll(err) {
    this.failed = err;
    for (const entry of this.pending.values()) {
      if (entry.queue) entry.queue.close(err);
      else entry.reject(err);
    }
    this.pending.clear();
  }

  /**
   * @param {string} kind
   * @param {unknown[]} args
   * @param {{onProgress?: (p: any) => void}} [options]
   * @returns {Promise<any>}  the return value, or an async iterator if the host answered with a stream
   */
  call(kind, args, options = {}) {
    if (this.failed) return Promise.reject(this.failed);
    const uuid = newUuid();
    return new Promise((resolve, reject) => {
      this.pending.set(uuid, { resolve, reject, onProgress: options.onProgress });
      this.port.postMessage(/** @type {CallMessage} */ ({ kind, uuid, args }));
    });
  }

  /** @param {ReplyMessage} msg */
  onMessage(msg) {
    const entry = msg && this.pending.get(msg.uuid);
    if (!entry) return;
    switch (msg.kind) {
      case "progress":
        entry.onProgress?.(msg.progress);
        break;
      case "stream":
        entry.queue = new AsyncQueue(() => {
          this.pending.delete(msg.uuid);
          this.port.postMessage(/** @type {CancelMessage} */ ({ kind: "cancel", uuid: msg.uuid }));
        });
        entry.resolve(entry.queue);
        break;
      case "chunk":
        entry.queue?.push(msg.chunk);
        break;
      case "return":
        this.pending.delete(msg.uuid);
        if (entry.queue) entry.queue.close();
        else entry.resolve(msg.value);
        break;
      case "throw": {
        this.pending.delete(msg.uuid);
        const err = deserializeError(msg.error);
        if (entry.queue) entry.queue.close(err);
        else entry.reject(err);
        break;
      }
    }
  }
}

/**
 * Host side: runs calls against a {kind: method} table and posts the replies. A method is called with the
 * call's argument list and a context {onProgress, signal}; a result with Symbol.asyncIterator is streamed,
 * and `signal` aborts when the consumer cancels that stream.
 * @param {Port} port
 * @param {Record<string, (...args: any[]) => any> | Promise<Record<string, (...args: any[]) => any>>} table
 */
export function serveProtocol(port, table) {
  /** @type {Map<string, AbortController>} */
  const running = new Map();
  Promise.resolve(table).catch(() => {}); // a table that failed to build is reported per call, not as unhandled
  port.addEventListener("message", async (/** @type {MessageEvent} */ ev) => {
    const msg = /** @type {CallMessage | CancelMessage} */ (ev.data);
    if (!msg || typeof msg.uuid !== "string") return;
    if (msg.kind === "cancel") {
      running.get(msg.uuid)?.abort(new AbortError("The consumer stopped reading the stream."));
      return;
    }
    const { uuid, args } = /** @type {CallMessage} */ (msg);
    const controller = new AbortController();
    running.set(uuid, controller);
    const post = (/** @type {ReplyMessage} */ reply) => port.postMessage(reply);
    try {
      const methods = await table;
      const method = Object.hasOwn(ENGINE_METHODS, msg.kind) ? methods[msg.kind] : undefined;
      if (typeof method !== "function") {
        throw new WebbuildError(`Unknown engine call "${msg.kind}".`);
      }
      const ctx = {
        onProgress: (/** @type {unknown} */ progress) => post({ kind: "progress", uuid, progress }),
        signal: controller.signal,
      };
      const result = await method(Array.isArray(args) ? args : [], ctx);
      if (result != null && typeof result[Symbol.asyncIterator] === "function") {
        post({ kind: "stream", uuid });
        for await (const chunk of result) {
          if (controller.signal.aborted) break; // break calls the generator's return(), which cleans up
          post({ kind: "chunk", uuid, chunk });
        }
        post({ kind: "return", uuid, value: undefined });
      } else {
        post({ kind: "return", uuid, value: result });
      }
    } catch (err) {
      post({ kind: "throw", uuid, error: serializeError(err) });
    } finally {
      running.delete(uuid);
    }
  });
}
