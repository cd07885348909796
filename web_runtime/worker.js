// Web Worker entry: hosts one Engine and answers the protocol. Created by the page with
//   new Worker(new URL("./worker.js", import.meta.url), {type: "module"})
// Imported by anything else (tests, another worker script), it only defines createHandlers().

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
    tokenize: ([text, options]) => engine.tokenize(text, options),
    applyChatTemplate: ([messages, options]) => engine.applyChatTemplate(messages, options),
    interrupt: () => engine.interrupt(),
    resetChat: () => engine.resetChat(),
    runtimeStats: () => engine.runtimeStats(),
    getModelInfo: () => engine.getModelInfo(),
    unload: () => engine.unload(),
  };
}

/**
 * True when this module is the main script of a dedicated worker. Another worker script that imports
 * createHandlers() (to host an engine of its own) must not get a second, competing listener.
 */
function isWorkerEntry() {
  const g = /** @type {any} */ (globalThis);
  const dedicated = typeof g.DedicatedWorkerGlobalScope === "function" && g instanceof g.DedicatedWorkerGlobalScope;
  return dedicated && g.location?.href === import.meta.url;
}

if (isWorkerEntry()) {
  // The listener is installed now, synchronously: messages that arrive while engine.js (and the vendored
  // tokenizer/jinja it imports) still load wait on the table promise instead of being dropped.
  const table = import("./engine.js").then(
    ({ Engine }) => createHandlers(new Engine()),
    (err) => {
      throw new ModelLoadError(`The engine could not start in the worker: ${err?.message ?? err}`, {
        cause: err,
        tip: "Check that runtime/ and runtime/vendor/ were deployed completely.",
      });
    },
  );
  serveProtocol(/** @type {any} */ (globalThis), table);
}

export { ENGINE_METHODS };
