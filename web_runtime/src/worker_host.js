// Hosting the engine in a worker (the package's "./host" entry): the {kind: method} table the protocol
// dispatches through, and startWorker(), which serves an engine on a worker's global scope. worker.js calls
// startWorker() when it is imported in a dedicated worker; call it yourself to host the engine on another
// scope (a SharedWorker's ports) or with an engine of your own.

import { ENGINE_METHODS, serveProtocol } from "./protocol.js";
import { ModelLoadError } from "./errors.js";

/**
 * The {kind: method} table the protocol dispatches through: one entry per ENGINE_METHODS kind. Each gets
 * the call's argument list and the context {onProgress, signal} the protocol provides.
 * @param {import("./engine.js").Engine} engine
 * @returns {Record<keyof typeof ENGINE_METHODS, (args: any[], ctx: {onProgress: (p: unknown) => void, signal: AbortSignal}) => unknown>}
 */
export function createHandlers(engine) {
  return {
    reload: ([source, options = {}], ctx) =>
      engine.reload(source, { ...options, onProgress: ctx.onProgress, signal: ctx.signal }),
    chatCompletion: ([request], ctx) => engine.chatCompletion(request, { signal: ctx.signal }),
    completion: ([request], ctx) => engine.completion(request, { signal: ctx.signal }),
    forwardTokens: ([promptIds, decodeIds]) => engine.forwardTokens(promptIds, decodeIds),
    scoreTokens: ([tokenIds, options]) => engine.scoreTokens(tokenIds, options),
    profile: ([promptIds, options]) => engine.profile(promptIds, options),
    tokenize: ([text, options]) => engine.tokenize(text, options),
    applyChatTemplate: ([messages, options]) => engine.applyChatTemplate(messages, options),
    interrupt: () => engine.interrupt(),
    interruptGenerate: () => engine.interruptGenerate(),
    resetChat: ([keepStats]) => engine.resetChat(keepStats),
    runtimeStats: () => engine.runtimeStats(),
    runtimeStatsText: () => engine.runtimeStatsText(),
    getMessage: () => engine.getMessage(),
    getModelInfo: () => engine.getModelInfo(),
    unload: () => engine.unload(),
  };
}

/** Scopes already serving an engine: a second startWorker() on one must not add a competing listener. */
const serving = new WeakSet();

/**
 * @typedef {object} StartWorkerOptions
 * @property {import("./protocol.js").Port} [scope]  where calls arrive and replies go (default: this
 *   worker's global scope; a MessagePort works too, e.g. a SharedWorker's connection)
 * @property {() => import("./engine.js").Engine | Promise<import("./engine.js").Engine>} [createEngine]
 *   the engine to serve (default: a new Engine, imported on first use)
 */

/**
 * Serves an engine on `scope` through the message protocol; the page talks to it with
 * CreateWebWorkerEngine(worker, ...). The listener is installed at once, synchronously: calls that arrive
 * while the engine (and the tokenizer and chat-template libraries it imports) still loads wait for it
 * instead of being dropped. A failure to load the engine answers every call with a ModelLoadError.
 * Calling it again for the same scope does nothing.
 * @param {StartWorkerOptions} [options]
 * @returns {boolean}  whether this call started serving (false: the scope was already served)
 */
export function startWorker({ scope = /** @type {any} */ (globalThis), createEngine } = {}) {
  if (serving.has(scope)) return false;
  serving.add(scope);
  const make = createEngine ?? (async () => new (await import("./engine.js")).Engine());
  const table = Promise.resolve()
    .then(make)
    .then(createHandlers, (err) => {
      throw new ModelLoadError(`The engine could not start in the worker: ${err?.message ?? err}`, {
        cause: err,
        tip: "Check that runtime/ and runtime/vendor/ were deployed completely.",
      });
    });
  serveProtocol(scope, table);
  return true;
}

/** Whether this code runs in a dedicated worker (not the page, a SharedWorker, a Service Worker or node). */
export function isDedicatedWorker() {
  const g = /** @type {any} */ (globalThis);
  return typeof g.DedicatedWorkerGlobalScope === "function" && g instanceof g.DedicatedWorkerGlobalScope;
}
