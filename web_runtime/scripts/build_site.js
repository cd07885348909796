// `npm run build:site` (or `node scripts/build_site.js [OUT_DIR]`): writes the browser runtime as a folder
// a static site serves as is, with no bundler and no import map (module workers cannot use one).
//
// Contract with the Python tool, which copies OUT_DIR verbatim into a site's runtime/ folder and ships it in
// its wheel (webbuild/build/site.py):
//   OUT_DIR            web_runtime/dist/runtime/ unless given; replaced as a whole (no stale files).
//   index.js           the page's entry: import { CreateWebWorkerEngine } from "./runtime/index.js"
//   worker.js          the worker's entry: new Worker(new URL("./runtime/worker.js", import.meta.url),
//                      { type: "module" }); a wrapper worker may also `import` it (another origin's page)
//   <module>.js        every other module of src/, byte for byte, except:
//   vendor.js          src/vendor.js with each package name replaced by "./vendor/<file>"
//   vendor/            the dependencies' browser files, unchanged: tokenizers.mjs (@huggingface/tokenizers
//                      dist/tokenizers.mjs), jinja.js (@huggingface/jinja dist/index.js), tvmjs.js
//                      (@mlc-ai/web-runtime lib/index.js), xgrammar.js (@mlc-ai/web-xgrammar lib/index.js,
//                      its wasm inlined), and their licences: LICENSE.tokenizers.txt, LICENSE.jinja.txt,
//                      LICENSE.tvmjs.txt, NOTICE.tvmjs.txt, LICENSE.tslib.txt (tvmjs inlines tslib's
//                      helpers), LICENSE.xgrammar.txt (Apache-2.0, which its package.json names: the
//                      package ships no licence file, so the Apache text comes from tvmjs's LICENSE)
// Nothing else: every import is relative and resolves inside OUT_DIR (checked here, the build fails
// otherwise), so the folder works under any URL path. The files are plain ES modules (tvmjs.js: a UMD
// script that, imported as a module, defines globalThis.tvmjs); serve .js/.mjs as text/javascript.
// Needs `npm ci` first (the vendored files come from node_modules); takes well under a second.

import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const SRC = join(ROOT, "src");

/**
 * Each package src/vendor.js imports: the file to vendor (the one node and bundlers resolve it to in a
 * browser) and the licence files that travel with it, as {file in the package: name in vendor/}.
 */
export const VENDOR = {
  "@huggingface/tokenizers": {
    file: "dist/tokenizers.mjs",
    as: "tokenizers.mjs",
    licences: { LICENSE: "LICENSE.tokenizers.txt" },
  },
  "@huggingface/jinja": { file: "dist/index.js", as: "jinja.js", licences: { LICENSE: "LICENSE.jinja.txt" } },
  "@mlc-ai/web-runtime": {
    file: "lib/index.js",
    as: "tvmjs.js",
    licences: { LICENSE: "LICENSE.tvmjs.txt", NOTICE: "NOTICE.tvmjs.txt" },
  },
  "@mlc-ai/web-xgrammar": { file: "lib/index.js", as: "xgrammar.js", licences: {} },
};
/** Licences of code inlined into a vendored file: tvmjs's bundle carries tslib's helpers. */
const INLINED = { tslib: { licences: { "LICENSE.txt": "LICENSE.tslib.txt" }, in: "@mlc-ai/web-runtime" } };
/** Apache-2.0 packages that ship no licence file: the licence's text, cut from tvmjs's LICENSE (its first part). */
const APACHE = { from: "@mlc-ai/web-runtime", file: "LICENSE", end: "limitations under the License.\n", for: ["LICENSE.xgrammar.txt"] };

/**
 * Builds the runtime folder.
 * @param {string} [outDir]
 * @returns {{outDir: string, files: string[]}}  files relative to outDir, sorted
 */
export function buildSite(outDir = join(ROOT, "dist", "runtime")) {
  const out = resolve(outDir);
  const tmp = `${out}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(join(tmp, "vendor"), { recursive: true });
  try {
    for (const name of readdirSync(SRC).filter((f) => f.endsWith(".js"))) {
      const text = readFileSync(join(SRC, name), "utf8");
      writeFileSync(join(tmp, name), name === "vendor.js" ? vendorModule(text) : text);
    }
    for (const [pkg, spec] of Object.entries(VENDOR)) {
      const dir = packageDir(pkg, ROOT);
      copy(join(dir, spec.file), join(tmp, "vendor", spec.as));
      for (const [from, to] of Object.entries(spec.licences)) copy(join(dir, from), join(tmp, "vendor", to));
    }
    for (const [pkg, spec] of Object.entries(INLINED)) {
      const dir = packageDir(pkg, packageDir(spec.in, ROOT));
      for (const [from, to] of Object.entries(spec.licences)) copy(join(dir, from), join(tmp, "vendor", to));
    }
    const apache = readFileSync(join(packageDir(APACHE.from, ROOT), APACHE.file), "utf8");
    const cut = apache.indexOf(APACHE.end);
    if (cut < 0) throw new Error(`${APACHE.from}/${APACHE.file} no longer starts with the Apache License 2.0 text.`);
    for (const name of APACHE.for) writeFileSync(join(tmp, "vendor", name), apache.slice(0, cut + APACHE.end.length));
    checkImports(tmp);
    rmSync(out, { recursive: true, force: true });
    mkdirSync(dirname(out), { recursive: true });
    renameSync(tmp, out);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
  return { outDir: out, files: listFiles(out) };
}

/**
 * src/vendor.js with every package name it imports replaced by its vendored file's relative URL.
 * @param {string} text
 */
function vendorModule(text) {
  const rewritten = text.replace(/(["'])([^"'\s]+)\1/g, (literal, quote, spec) =>
    Object.hasOwn(VENDOR, spec) ? `${quote}./vendor/${VENDOR[/** @type {keyof VENDOR} */ (spec)].as}${quote}` : literal,
  );
  return `// Written by web_runtime/scripts/build_site.js from src/vendor.js: packages replaced by vendor/ files.\n${rewritten}`;
}

/**
 * The import specifiers of a module: static imports and re-exports, side-effect imports, dynamic imports
 * with a string literal. Comments are dropped first, so JSDoc `import("./x.js").T` types do not count.
 * @param {string} text
 * @returns {string[]}
 */
export function importSpecifiers(text) {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
  const found = [];
  const patterns = [
    /\b(?:import|export)\s+[^;"'`]*?\bfrom\s*(["'])([^"']+)\1/g,
    /\bimport\s*(["'])([^"']+)\1/g,
    /\bimport\s*\(\s*(["'])([^"']+)\1\s*\)/g,
  ];
  for (const re of patterns) for (const m of code.matchAll(re)) found.push(m[2]);
  return found;
}

/**
 * Every module of the runtime (not the vendored files, which import nothing) imports only files of `dir`.
 * @param {string} dir
 */
function checkImports(dir) {
  for (const name of readdirSync(dir).filter((f) => f.endsWith(".js"))) {
    for (const spec of importSpecifiers(readFileSync(join(dir, name), "utf8"))) {
      if (!spec.startsWith("./") && !spec.startsWith("../")) {
        throw new Error(
          `${name} imports "${spec}", which a static site cannot resolve. Import npm packages only in ` +
            "src/vendor.js and list them in VENDOR (scripts/build_site.js).",
        );
      }
      const target = resolve(dir, spec);
      if (relative(dir, target).startsWith("..") || !existsSync(target)) {
        throw new Error(`${name} imports "${spec}", which is not in the runtime folder.`);
      }
    }
  }
}

/**
 * The folder of package `name` as node resolves it from `from` (the nearest node_modules/<name> above).
 * Found by path, not require.resolve: not every package exports its package.json.
 * @param {string} name
 * @param {string} from
 */
function packageDir(name, from) {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, "node_modules", name);
    if (existsSync(join(candidate, "package.json"))) return candidate;
    if (dirname(dir) === dir) {
      throw new Error(
        `npm package ${name} is not installed; run \`npm ci\` in ${relative(process.cwd(), ROOT) || "."}.`,
      );
    }
  }
}

/**
 * @param {string} from
 * @param {string} to
 */
function copy(from, to) {
  if (!existsSync(from)) throw new Error(`${from} is missing; run \`npm ci\` in web_runtime/ again.`);
  writeFileSync(to, readFileSync(from));
}

/** @param {string} dir */
function listFiles(dir) {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) =>
      relative(dir, join(e.parentPath ?? e.path, e.name))
        .split("\\")
        .join("/"),
    )
    .sort();
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    const { outDir, files } = buildSite(process.argv[2]);
    console.log(`wrote ${files.length} files to ${relative(process.cwd(), outDir) || "."}`);
  } catch (err) {
    console.error(`build:site failed: ${err instanceof Error ? err.message : err}`);
    process.exitCode = 1;
  }
}
