// `npm run build:site`: the static runtime folder the Python tool copies into a site (contract at the top
// of scripts/build_site.js).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { buildSite, importSpecifiers, VENDOR } from "../scripts/build_site.js";

const VENDOR_FILES = [
  "vendor/tokenizers.mjs",
  "vendor/jinja.js",
  "vendor/tvmjs.js",
  "vendor/xgrammar.js",
  "vendor/LICENSE.tokenizers.txt",
  "vendor/LICENSE.jinja.txt",
  "vendor/LICENSE.tvmjs.txt",
  "vendor/NOTICE.tvmjs.txt",
  "vendor/LICENSE.tslib.txt",
  "vendor/LICENSE.xgrammar.txt",
];

// Built once into a temporary folder whose package.json says "module", so node loads the files as a
// browser does: as ES modules (tvmjs.js then defines globalThis.tvmjs, as on a site).
const parent = mkdtempSync(join(tmpdir(), "webbuild-runtime-site-"));
writeFileSync(join(parent, "package.json"), '{"type": "module"}\n');
const { outDir, files } = buildSite(join(parent, "runtime"));
process.on("exit", () => rmSync(parent, { recursive: true, force: true }));

test("the folder holds every src/ module, the entries at its root, and vendor/ with the licences", () => {
  const modules = readdirSync(new URL("../src/", import.meta.url)).filter((f) => f.endsWith(".js"));
  assert.deepEqual(files, [...modules, ...VENDOR_FILES].sort());
  assert.ok(files.includes("index.js") && files.includes("worker.js"));
  for (const name of modules.filter((m) => m !== "vendor.js")) {
    assert.equal(
      readFileSync(join(outDir, name), "utf8"),
      readFileSync(new URL(`../src/${name}`, import.meta.url), "utf8"),
    );
  }
});

test("every import is relative and stays in the folder; vendor.js names vendor/ files, not packages", () => {
  for (const name of files.filter((f) => f.endsWith(".js") && !f.startsWith("vendor/"))) {
    for (const spec of importSpecifiers(readFileSync(join(outDir, name), "utf8"))) {
      assert.match(spec, /^\.\/[\w/]+\.m?js$/, `${name} imports ${spec}`);
      assert.ok(files.includes(spec.slice(2)), `${name} imports ${spec}`);
    }
  }
  const vendor = importSpecifiers(readFileSync(join(outDir, "vendor.js"), "utf8"));
  assert.deepEqual(
    vendor.sort(),
    Object.values(VENDOR)
      .map((v) => `./vendor/${v.as}`)
      .sort(),
  );
});

test("the folder runs as plain ES modules: page entry, engine, and tvmjs through globalThis", async () => {
  const url = (/** @type {string} */ name) => pathToFileURL(join(outDir, name)).href;
  const index = await import(url("index.js"));
  assert.equal(typeof index.CreateWebWorkerEngine, "function");
  const { Engine } = await import(url("engine.js"));
  assert.equal(new Engine().getModelInfo(), null);
  const tvmjs = await (await import(url("vendor.js"))).loadTvmjs();
  assert.equal(typeof tvmjs.instantiate, "function");
  assert.equal(/** @type {any} */ (globalThis).tvmjs, tvmjs, "loaded as a script-like module, as in a browser");
  const xgrammar = await (await import(url("vendor.js"))).loadXgrammar();
  assert.equal(typeof xgrammar.GrammarCompiler.createGrammarCompiler, "function");
  assert.equal(/** @type {any} */ (globalThis).location, undefined, "node's stand-in location is gone");
});

test("importSpecifiers finds static, side-effect and dynamic imports, not JSDoc types", () => {
  const text = [
    'import { a } from "./a.js";',
    'export { b } from "./b.js";',
    'import "./c.js";',
    'const d = await import("./d.js");',
    '/** @type {import("./types.js").T} */',
    '// import "./commented.js";',
    'import {\n  e,\n} from "@scope/e";',
  ].join("\n");
  assert.deepEqual(importSpecifiers(text).sort(), ["./a.js", "./b.js", "./c.js", "./d.js", "@scope/e"]);
});
