import { test } from "node:test";
import assert from "node:assert/strict";
import { createHandlers, ENGINE_METHODS } from "../worker.js";
import { ProtocolClient, serveProtocol } from "../protocol.js";
import { ShaderF16UnsupportedError } from "../errors.js";
import { WebWorkerEngine } from "../index.js";
import { portPair } from "./helpers.js";

/** An engine double that records calls. */
function mockEngine() {
  const calls = [];
  const record =
    (name) =>
    (...args) => {
      calls.push([name, ...args]);
      return { called: name };
    };
  const engine = Object.fromEntries(Object.keys(ENGINE_METHODS).map((k) => [k, record(k)]));
  return { engine, calls };
}

/** A WebWorkerEngine talking to `engine` through the real protocol over an in-memory port pair. */
function connect(engine) {
  const [pagePort, hostPort] = portPair();
  serveProtocol(hostPort, createHandlers(engine));
  pagePort.terminate = () => {};
  return new WebWorkerEngine(/** @type {any} */ (pagePort));
}

test("the handler table covers exactly the protocol's kinds", () => {
  const { engine } = mockEngine();
  assert.deepEqual(Object.keys(createHandlers(engine)).sort(), Object.keys(ENGINE_METHODS).sort());
});

test("the page proxy has a method per kind and OpenAI-style namespaces", () => {
  const proxy = connect(mockEngine().engine);
  for (const kind of Object.keys(ENGINE_METHODS)) assert.equal(typeof proxy[kind], "function", kind);
  assert.equal(typeof proxy.chat.completions.create, "function");
  assert.equal(typeof proxy.completions.create, "function");
});

test("calls reach the engine with their arguments; reload gets progress and a signal", async () => {
  const { engine, calls } = mockEngine();
  engine.reload = async (source, options) => {
    options.onProgress({ phase: "weights", loaded: 5, total: 10, text: "" });
    calls.push(["reload", source, options.model, options.signal instanceof AbortSignal]);
    return { id: "m" };
  };
  const proxy = connect(engine);
  const progress = [];
  const info = await proxy.reload("https://x.test/manifest.json", {
    model: "m",
    initProgressCallback: (p) => progress.push(p),
  });
  assert.deepEqual(info, { id: "m" });
  assert.deepEqual(progress, [{ phase: "weights", loaded: 5, total: 10, text: "" }]);
  await proxy.forwardTokens([1, 2], [3]);
  await proxy.chat.completions.create({ messages: [] });
  assert.deepEqual(calls[0], ["reload", "https://x.test/manifest.json", "m", true]);
  assert.deepEqual(calls[1], ["forwardTokens", [1, 2], [3]]);
  assert.equal(calls[2][0], "chatCompletion");
  assert.deepEqual(calls[2][1], { messages: [] });
});

test("a streamed completion arrives chunk by chunk on the page", async () => {
  const { engine } = mockEngine();
  engine.chatCompletion = async () =>
    (async function* () {
      yield { n: 1 };
      yield { n: 2 };
    })();
  const proxy = connect(engine);
  const got = [];
  for await (const chunk of await proxy.chat.completions.create({ stream: true })) got.push(chunk.n);
  assert.deepEqual(got, [1, 2]);
});

test("an engine error is rethrown on the page as the same class", async () => {
  const { engine } = mockEngine();
  engine.reload = async () => {
    throw ShaderF16UnsupportedError.forModel("m-q4f16_1", "m-q4f32_1", false);
  };
  const proxy = connect(engine);
  await assert.rejects(proxy.reload("https://x.test/manifest.json"), (err) => {
    assert.ok(err instanceof ShaderF16UnsupportedError);
    assert.equal(err.code, "shader_f16_unsupported");
    assert.equal(err.data.f32_variant, "m-q4f32_1");
    return true;
  });
});

test("a table that failed to build (engine import failed) answers every call with that error", async () => {
  const [pagePort, hostPort] = portPair();
  const failed = Promise.reject(new Error("Failed to fetch dynamically imported module: vendor/jinja.js"));
  failed.catch(() => {});
  serveProtocol(hostPort, failed);
  const client = new ProtocolClient(pagePort);
  await assert.rejects(client.call("getModelInfo", []), /vendor\/jinja\.js/);
});
