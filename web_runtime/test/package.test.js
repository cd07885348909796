// The runtime as an npm package: `npm pack`, install the tarball into a fresh project (offline, from the npm
// cache `npm ci` filled), then use it by its name from node and from TypeScript.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ENGINE_METHODS } from "../src/protocol.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8"));

/**
 * @param {string} cmd
 * @param {string[]} args
 * @param {string} cwd
 */
function run(cmd, args, cwd) {
  const r = spawnSync(cmd, args, {
    cwd,
    encoding: "utf8",
    env: { ...process.env, npm_config_update_notifier: "false" },
  });
  return {
    ok: r.status === 0,
    stdout: r.stdout,
    output: `${cmd} ${args.join(" ")}: exit ${r.status}\n${r.stdout}\n${r.stderr}`,
  };
}

/**
 * A lockfile for a project that depends on the tarball alone: the runtime's own entries for its
 * dependencies, so `npm ci --offline` finds every one in the cache without asking the registry.
 * @param {string} tarball  path relative to the project
 */
function consumerLock(tarball) {
  /** @type {Record<string, any>} */
  const packages = {
    "": { name: "consumer", dependencies: { [pkg.name]: `file:${tarball}` } },
    [`node_modules/${pkg.name}`]: {
      version: pkg.version,
      resolved: `file:${tarball}`,
      license: pkg.license,
      dependencies: pkg.dependencies,
    },
  };
  for (const [path, entry] of Object.entries(lock.packages)) if (path && !entry.dev) packages[path] = entry;
  return { name: "consumer", lockfileVersion: 3, requires: true, packages };
}

test("the packed package installs by name and works from node and TypeScript", { timeout: 120_000 }, () => {
  const tmp = mkdtempSync(join(tmpdir(), "webbuild-runtime-pack-"));
  try {
    const pack = run("npm", ["pack", "--json", "--pack-destination", tmp], ROOT);
    assert.ok(pack.ok, pack.output);
    const [{ filename, files }] = JSON.parse(pack.stdout.slice(pack.stdout.indexOf("[")));
    const paths = files.map((/** @type {{path: string}} */ f) => f.path);
    for (const p of [
      "package.json",
      "README.md",
      "src/index.js",
      "src/worker.js",
      "src/worker_host.js",
      "src/engine.js",
      "src/vendor.js",
    ]) {
      assert.ok(paths.includes(p), p);
    }
    for (const p of [
      "types/index.d.ts",
      "types/worker.d.ts",
      "types/worker_host.d.ts",
      "types/engine.d.ts",
      "types/types.d.ts",
    ]) {
      assert.ok(paths.includes(p), p);
    }
    assert.deepEqual(
      paths.filter((/** @type {string} */ p) => /^(test|scripts|dist|node_modules)\//.test(p)),
      [],
      "only the runtime and its types ship",
    );

    const project = join(tmp, "consumer");
    mkdirSync(project);
    const manifest = {
      name: "consumer",
      private: true,
      type: "module",
      dependencies: { [pkg.name]: `file:../${filename}` },
    };
    writeFileSync(join(project, "package.json"), JSON.stringify(manifest));
    writeFileSync(join(project, "package-lock.json"), JSON.stringify(consumerLock(`../${filename}`)));
    const flags = ["--no-audit", "--no-fund", "--ignore-scripts"];
    let install = run("npm", ["ci", "--offline", ...flags], project);
    // A cache without the dependencies (npm cache clean): fetch them, as a user's install would.
    if (!install.ok) install = run("npm", ["ci", "--prefer-offline", ...flags], project);
    assert.ok(install.ok, install.output);

    writeFileSync(
      join(project, "smoke.js"),
      `import * as runtime from "${pkg.name}";
import "${pkg.name}/worker";
import { startWorker, createHandlers } from "${pkg.name}/host";
import { Engine, CreateEngine, CreateMLCEngine } from "${pkg.name}/engine";
// The engine's dependencies resolve from the installed package; tvmjs loads as CommonJS there.
const vendor = await import(new URL("./vendor.js", import.meta.resolve("${pkg.name}/engine")));
const tvmjs = await vendor.loadTvmjs();
console.log(JSON.stringify({
  exports: Object.keys(runtime).sort(),
  host: [typeof startWorker, typeof createHandlers, typeof CreateEngine, typeof CreateMLCEngine],
  engine: new Engine().getModelInfo(),
  tokenizer: typeof vendor.Tokenizer,
  template: typeof vendor.Template,
  tvmjs: typeof tvmjs.instantiate,
}));
`,
    );
    const smoke = run(process.execPath, ["smoke.js"], project);
    assert.ok(smoke.ok, smoke.output);
    const seen = JSON.parse(smoke.stdout);
    for (const name of [
      "CreateWebWorkerEngine",
      "CreateWebWorkerMLCEngine",
      "WebWorkerEngine",
      "createEngineWorker",
      "ContextLengthExceededError",
    ]) {
      assert.ok(seen.exports.includes(name), name);
    }
    assert.deepEqual(
      { host: seen.host, engine: seen.engine, tokenizer: seen.tokenizer, template: seen.template, tvmjs: seen.tvmjs },
      {
        host: ["function", "function", "function", "function"],
        engine: null,
        tokenizer: "function",
        template: "function",
        tvmjs: "function",
      },
    );

    const installed = join(project, "node_modules", pkg.name);
    const index = readFileSync(join(installed, "types", "index.d.ts"), "utf8");
    assert.match(index, /export function CreateWebWorkerEngine\(/);
    assert.match(index, /export type ChatCompletionRequest = /);
    assert.match(index, /export type ChatCompletionChunk = /);
    assert.match(index, /chat: \{\s*completions: \{\s*create: <R extends ChatCompletionRequest>/);
    const engineClass = index.slice(index.indexOf("export class WebWorkerEngine"));
    for (const kind of Object.keys(ENGINE_METHODS)) assert.match(engineClass, new RegExp(`\\b${kind}[(:]`), kind);

    copyFileSync(new URL("./fixtures/consumer_check.ts", import.meta.url), join(project, "check.ts"));
    const tsconfig = {
      compilerOptions: {
        noEmit: true,
        strict: true,
        target: "es2022",
        module: "esnext",
        moduleResolution: "bundler",
        lib: ["es2022", "dom", "dom.iterable"],
        types: [],
        skipDefaultLibCheck: true, // the package's .d.ts files are checked; the DOM library is not
      },
      files: ["check.ts"],
    };
    writeFileSync(join(project, "tsconfig.json"), JSON.stringify(tsconfig));
    const tsc = run(
      process.execPath,
      [join(ROOT, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.json"],
      project,
    );
    assert.ok(tsc.ok, tsc.output);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
