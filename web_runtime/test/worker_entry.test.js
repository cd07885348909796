// The worker entry as other scripts use it: imported by a wrapper worker (by the package's name), it serves
// the engine; startWorker() serves a scope once, or a port of one's own with a custom engine; the page's
// createEngineWorker() wraps a worker URL of another origin. Browser workers are stood in for by node
// worker threads dressed up as a DedicatedWorkerGlobalScope (fixtures/worker_scope.js).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Worker } from "node:worker_threads";
import { resolveObjectURL } from "node:buffer";
import { WebWorkerEngine, ModelNotLoadedError, createEngineWorker } from "../src/index.js";
import { ProtocolClient } from "../src/protocol.js";

/**
 * Runs `script` as a dedicated worker would; returns the thread and a port for the page's side.
 * @param {string} script  file name under fixtures/
 */
function startThread(script) {
  const thread = new Worker(new URL("./fixtures/worker_scope.js", import.meta.url), {
    workerData: { script: new URL(`./fixtures/${script}`, import.meta.url).href },
  });
  const port = {
    postMessage: (/** @type {unknown} */ msg) => thread.postMessage(msg),
    addEventListener: (/** @type {string} */ type, /** @type {(ev: any) => void} */ fn) =>
      thread.on(type, (data) => fn(type === "message" ? { data } : data)),
    terminate: () => thread.terminate(),
  };
  return { thread, port };
}

test("a wrapper worker that imports the package's worker entry serves the engine", { timeout: 20000 }, async (t) => {
  const { port } = startThread("wrapper_worker.js");
  const engine = new WebWorkerEngine(/** @type {any} */ (port));
  t.after(() => engine.terminate());
  assert.equal(await engine.getModelInfo(), null);
  await assert.rejects(engine.tokenize("hi"), ModelNotLoadedError);
  await assert.rejects(engine.chat.completions.create({ messages: [{ role: "user", content: "hi" }] }), (err) => {
    assert.ok(err instanceof ModelNotLoadedError);
    assert.equal(err.code, "model_not_loaded");
    return true;
  });
});

test("startWorker serves a scope once; a port of one's own can host a custom engine", { timeout: 20000 }, async (t) => {
  const { thread, port } = startThread("custom_worker.js");
  t.after(() => thread.terminate());
  const setup = await new Promise((resolve) => thread.on("message", (m) => m?.kind === "setup" && resolve(m)));
  assert.equal(setup.second, false, "a second startWorker on the worker's scope is refused");
  const defaultEngine = new ProtocolClient(/** @type {any} */ (port));
  assert.equal(await defaultEngine.call("getModelInfo", []), null, "the worker entry's engine answers");
  setup.port.start();
  const custom = new ProtocolClient(setup.port);
  assert.deepEqual(await custom.call("getModelInfo", []), { id: "custom-engine" });
  setup.port.close();
});

test("importing the worker entry outside a dedicated worker does nothing", async () => {
  const before = typeof (/** @type {any} */ (globalThis).addEventListener);
  await import("../src/worker.js");
  assert.equal(typeof (/** @type {any} */ (globalThis).addEventListener), before);
});

test("createEngineWorker: same origin starts the script itself; another origin gets an importing wrapper", async (t) => {
  const g = /** @type {any} */ (globalThis);
  const saved = { Worker: g.Worker, location: g.location };
  t.after(() => Object.assign(g, saved));
  g.location = new URL("https://page.test/app/index.html");
  g.Worker = class {
    /** @param {URL | string} url @param {object} options */
    constructor(url, options) {
      Object.assign(this, { url: String(url), options });
    }
  };
  const local = /** @type {any} */ (createEngineWorker("./runtime/worker.js"));
  assert.equal(local.url, "https://page.test/app/runtime/worker.js");
  assert.deepEqual(local.options, { type: "module" });

  const remote = /** @type {any} */ (createEngineWorker("https://models.test/site/runtime/worker.js"));
  assert.match(remote.url, /^blob:/);
  assert.deepEqual(remote.options, { type: "module" });
  const source = await resolveObjectURL(remote.url)?.text();
  assert.equal(source, 'import "https://models.test/site/runtime/worker.js";\n');
});
