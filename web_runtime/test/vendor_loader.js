// Resolve hook for vendor_hook.js (runs on Node's loader thread).
const VENDOR = {
  "tokenizers.mjs": "@huggingface/tokenizers/dist/tokenizers.mjs",
  "jinja.js": "@huggingface/jinja/dist/index.js",
  "tvmjs.js": "@mlc-ai/web-runtime/lib/index.js",
};
const runtimeDir = new URL("../", import.meta.url).href;

export async function resolve(specifier, context, next) {
  if (context.parentURL?.startsWith(runtimeDir)) {
    const url = new URL(specifier, context.parentURL).href;
    const prefix = `${runtimeDir}vendor/`;
    if (url.startsWith(prefix) && Object.hasOwn(VENDOR, url.slice(prefix.length))) {
      return { url: new URL(`node_modules/${VENDOR[url.slice(prefix.length)]}`, runtimeDir).href, shortCircuit: true };
    }
  }
  return next(specifier, context);
}
