// WebLLM's factory arguments as this runtime's reload arguments, so that code calling WebLLM 0.2.86's
// CreateMLCEngine(modelId, engineConfig, chatOpts) or CreateWebWorkerMLCEngine(worker, modelId, ...) runs
// after changing the import: engine.js and index.js define those names over their own factories with this.
// It imports nothing of the engine, so the page's entry (index.js) can use it.
//
// What the factories take of WebLLM's arguments, and why the rest is refused rather than ignored:
// - modelId: one id of appConfig.model_list (or a list of one). WebLLM loads several models into one engine
//   when given several ids; here an engine holds one model, so several ids are refused.
// - engineConfig.appConfig: required. Without it WebLLM loads from its prebuilt list (models hosted on
//   Hugging Face, libraries built for its own TVM), which this runtime does not carry.
// - appConfig.cacheBackend: "cache" and "indexeddb" choose the storage as `cacheType` does; "cross-origin"
//   and "opfs" are refused (a storage the caller chose is not silently swapped for another).
//   appConfig.opfsAccessMode only applies to "opfs", so there is nothing for it to do.
// - engineConfig.initProgressCallback: gets this runtime's reports ({phase, loaded, total, text}) with
//   WebLLM's fields added: `progress` (0..1, of the phase in progress) and `timeElapsed` (seconds).
// - engineConfig.logLevel: ignored; it sets how much WebLLM logs to the console, not what the model does.
// - engineConfig.logitProcessorRegistry and chatOpts (overrides of mlc-chat-config.json: sampling defaults,
//   context window, conversation template): refused, since they change what the model generates and this
//   runtime does not apply them. Requests carry sampling fields (temperature, top_p, ...) instead.
// Any other engineConfig field is refused by name too: a typo or a newer WebLLM field must not pass unseen.

import { InvalidRequestError, UnsupportedParameterError } from "./errors.js";

/**
 * @typedef {import("./pipeline.js").LoadProgress & {progress: number, timeElapsed: number}} InitProgressReport
 *   this runtime's report plus WebLLM's `progress` (loaded / total of the current phase, 0..1) and
 *   `timeElapsed` (seconds since the load began)
 */

/**
 * @typedef {object} MLCEngineConfig  WebLLM's engineConfig, as far as this runtime takes it (see above)
 * @property {import("./config.js").WebLLMAppConfig} [appConfig]  the models to choose from; required here
 * @property {(report: InitProgressReport) => void} [initProgressCallback]
 * @property {string} [logLevel]  ignored (WebLLM's console verbosity)
 */

/**
 * @typedef {object} WebLLMReloadArgs  what a WebLLM factory call loads, as reload(source, options) takes it
 * @property {import("./config.js").WebLLMAppConfig} source
 * @property {{model: string, cacheType?: "cache" | "indexeddb",
 *   initProgressCallback?: (p: import("./pipeline.js").LoadProgress) => void}} options
 */

const TAKEN = new Set(["appConfig", "initProgressCallback", "logLevel"]);
const CACHE_BACKENDS = new Set(["cache", "indexeddb"]);

/**
 * The reload arguments of a WebLLM factory call; refuses (UnsupportedParameterError, InvalidRequestError)
 * what this runtime cannot do as WebLLM would, naming it.
 * @param {string} factory  the caller's name, for messages
 * @param {string | string[]} modelId
 * @param {MLCEngineConfig} [engineConfig]
 * @param {Record<string, unknown> | Record<string, unknown>[]} [chatOpts]
 * @returns {WebLLMReloadArgs}
 */
export function webllmReloadArgs(factory, modelId, engineConfig, chatOpts) {
  const config = engineConfig ?? {};
  const ids = Array.isArray(modelId) ? modelId : [modelId];
  if (ids.length > 1) {
    throw new UnsupportedParameterError(`${factory}: an engine here holds one model; got ${ids.length} ids.`, {
      param: "modelId",
      tip: "Create one engine per model.",
    });
  }
  const [model] = ids;
  if (typeof model !== "string" || model === "") {
    throw new InvalidRequestError(`${factory}: modelId must be a model_id of appConfig.model_list.`, {
      param: "modelId",
    });
  }
  for (const key of Object.keys(config)) {
    if (!TAKEN.has(key)) {
      throw new UnsupportedParameterError(
        `${factory}: engineConfig.${key} is not supported by webbuild-runtime (it takes appConfig, ` +
          "initProgressCallback and logLevel).",
        {
          param: `engineConfig.${key}`,
          tip:
            key === "logitProcessorRegistry"
              ? "Constrain output per request instead (response_format, logit_bias)."
              : "Leave it out.",
        },
      );
    }
  }
  const opts = (Array.isArray(chatOpts) ? chatOpts : [chatOpts]).flatMap((o) => Object.keys(o ?? {}));
  if (opts.length > 0) {
    throw new UnsupportedParameterError(
      `${factory}: chatOpts (${opts.join(", ")}) would override the model's mlc-chat-config.json, which ` +
        "webbuild-runtime reads as the model ships it.",
      { param: "chatOpts", tip: "Pass sampling fields (temperature, top_p, ...) with each request instead." },
    );
  }
  const { appConfig, initProgressCallback } = config;
  if (!appConfig) {
    throw new InvalidRequestError(
      `${factory}("${model}") needs engineConfig.appConfig: WebLLM's prebuilt model list is not part of ` +
        "webbuild-runtime.",
      {
        param: "engineConfig.appConfig",
        tip:
          "Pass {appConfig: {model_list: [{model, model_id, model_lib}]}} naming the model (a site's is " +
          "webllmAppConfig(manifest, manifestUrl)), or load a site with " +
          'CreateWebWorkerEngine(worker, "./manifest.json").',
      },
    );
  }
  const backend = appConfig.cacheBackend;
  if (backend !== undefined && !CACHE_BACKENDS.has(backend)) {
    throw new UnsupportedParameterError(`${factory}: appConfig.cacheBackend "${backend}" is not supported.`, {
      param: "engineConfig.appConfig.cacheBackend",
      tip: 'Use "cache" (the Cache API, the default) or "indexeddb".',
    });
  }
  /** @type {WebLLMReloadArgs["options"]} */
  const options = { model };
  if (backend !== undefined) options.cacheType = /** @type {"cache" | "indexeddb"} */ (backend);
  if (initProgressCallback) {
    const t0 = performance.now();
    options.initProgressCallback = (p) =>
      initProgressCallback({
        ...p,
        progress: p.total > 0 ? p.loaded / p.total : 0,
        timeElapsed: (performance.now() - t0) / 1000,
      });
  }
  return { source: appConfig, options };
}
