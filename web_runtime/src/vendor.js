// The one module that names the runtime's npm dependencies. In node and in a bundler they resolve as
// packages. A static site cannot resolve bare specifiers, so `npm run build:site` (scripts/build_site.js)
// copies the files they resolve to into runtime/vendor/ and writes a copy of this module that imports those
// by relative URL instead; it refuses a specifier it has no vendored file for.

export { Tokenizer } from "@huggingface/tokenizers";
export { Template } from "@huggingface/jinja";

/** @type {Promise<any> | undefined} */
let tvmjsPromise;

/**
 * The TVM JS runtime (@mlc-ai/web-runtime), loaded on first use so pages and tests that never run a model
 * do not pay for its 330 KB. Its lib/index.js is a UMD bundle, not an ES module, and arrives in one of two
 * shapes: as a package (node, bundlers) it is loaded as CommonJS, so its exports come as the module's
 * default export; as the vendored file of a static site it is loaded as an ES module, where it finds no
 * `exports` or `define` and sets `globalThis.tvmjs` instead.
 * @returns {Promise<any>}
 */
export function loadTvmjs() {
  tvmjsPromise ??= import("@mlc-ai/web-runtime").then((mod) => {
    const g = /** @type {any} */ (globalThis);
    const tvmjs = [/** @type {any} */ (mod).default, mod, g.tvmjs].find((m) => typeof m?.instantiate === "function");
    if (!tvmjs) throw new Error("The TVM JS runtime (@mlc-ai/web-runtime) loaded but exports no instantiate()");
    return tvmjs;
  });
  return tvmjsPromise;
}
