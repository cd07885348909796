// The one module that names vendored npm files. `webbuild package` (webbuild/site.py, VENDOR_FILES) copies
// them from node_modules into runtime/vendor/ so the browser loads them by relative URL, with no bundler.
// Node tests map these paths back to node_modules with a resolve hook (test/vendor_hook.js).

export { Tokenizer } from "./vendor/tokenizers.mjs";
export { Template } from "./vendor/jinja.js";

/** @type {Promise<any> | undefined} */
let tvmjsPromise;

/**
 * The TVM JS runtime (@mlc-ai/web-runtime). Its lib/index.js is a UMD bundle, not an ES module: imported
 * for its side effect, it defines `globalThis.tvmjs` (no `exports`/`define` in a module scope). Loaded on
 * first use so pages and tests that never run a model do not pay for its 330 KB.
 * @returns {Promise<any>}
 */
export function loadTvmjs() {
  tvmjsPromise ??= import("./vendor/tvmjs.js").then(() => {
    const tvmjs = /** @type {any} */ (globalThis).tvmjs;
    if (!tvmjs || typeof tvmjs.instantiate !== "function") {
      throw new Error("vendor/tvmjs.js loaded but did not define globalThis.tvmjs");
    }
    return tvmjs;
  });
  return tvmjsPromise;
}
