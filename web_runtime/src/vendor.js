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

/** @type {Promise<any> | undefined} */
let xgrammarPromise;
/** What xgrammar's wasm printed to stderr, latest last (at most 8 lines): why a compile failed. */
export const xgrammarPrinted = /** @type {string[]} */ ([]);

/**
 * xgrammar's web build (@mlc-ai/web-xgrammar: grammar compiler and matcher, its wasm inlined), loaded on the
 * first request that needs a grammar (1.1 MB). Like tvmjs it is a UMD bundle: imported as an ES module it sets
 * `globalThis.xgrammar`. Its emscripten glue reads `location.href` (a page's or worker's) when its wasm starts,
 * on the first call; node (tests) has none, so one stands in until a first grammar is made, then goes. That
 * first call also binds its stderr to console.error as it is then: a tap that keeps its lines in
 * xgrammarPrinted (a failed compile prints its reason there, and throws only "Aborted()" or a number).
 * @returns {Promise<any>}
 */
export function loadXgrammar() {
  xgrammarPromise ??= (async () => {
    const g = /** @type {any} */ (globalThis);
    const shim = typeof g.location === "undefined" && typeof g.document === "undefined";
    if (shim) g.location = { href: import.meta.url };
    const print = console.error;
    console.error = (/** @type {unknown[]} */ ...args) => {
      xgrammarPrinted.push(args.map(String).join(" "));
      xgrammarPrinted.splice(0, xgrammarPrinted.length - 8);
      print.apply(console, args);
    };
    try {
      const mod = await import("@mlc-ai/web-xgrammar");
      const xgr = [/** @type {any} */ (mod).default, mod, g.xgrammar].find((m) => typeof m?.GrammarMatcher === "function");
      if (!xgr) throw new Error("xgrammar (@mlc-ai/web-xgrammar) loaded but exports no GrammarMatcher");
      (await xgr.Grammar.builtinJSONGrammar()).dispose();
      return xgr;
    } finally {
      console.error = print;
      if (shim) delete g.location;
    }
  })();
  return xgrammarPromise;
}
