import { test } from "node:test";
import assert from "node:assert/strict";
import { createHandlers } from "../src/worker_host.js";
import { ENGINE_METHODS, ProtocolClient, serveProtocol } from "../src/protocol.js";
import { ShaderF16UnsupportedError, InvalidRequestError, UnsupportedParameterError } from "../src/errors.js";
import { WebWorkerEngine, CreateWebWorkerMLCEngine } from "../src/index.js";
import { Engine } from "../src/engine.js";
import { TextTokenizer } from "../src/tokenizer.js";
import { portPair, fixture, ScriptedPipeline } from "./helpers.js";

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

/** The page's end of an in-memory "worker" serving `engine` through the real protocol. */
function hostedWorker(engine) {
  const [pagePort, hostPort] = portPair();
  serveProtocol(hostPort, createHandlers(engine));
  pagePort.terminate = () => {};
  return /** @type {any} */ (pagePort);
}

/** A WebWorkerEngine talking to `engine` through the real protocol over an in-memory port pair. */
function connect(engine) {
  return new WebWorkerEngine(hostedWorker(engine));
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

/** The real Engine, with a scripted model (see helpers.js), loaded from an in-memory site. */
async function scriptedEngine(reply) {
  const files = {
    "mlc-chat-config.json": { vocab_size: 400, temperature: 0, eos_token_id: 2 },
    "tokenizer.json": fixture("tokenizer.json"),
    "tokenizer_config.json": fixture("tokenizer_config.json"),
  };
  globalThis.fetch = async (url) => {
    const name = String(url).split("/").at(-1);
    return name in files ? new Response(JSON.stringify(files[name])) : new Response("missing", { status: 404 });
  };
  const tok = new TextTokenizer(files["tokenizer.json"], files["tokenizer_config.json"]);
  const engine = new Engine({
    detectGpu: async () => ({ hasShaderF16: false, info: {} }),
    loadPipeline: async () => new ScriptedPipeline([...tok.encode(reply), 2], { after: 2 }),
  });
  const record = { id: "tiny", quantization: "q4f32_1", model_url: "models/tiny/", model_lib: "libs/tiny.wasm" };
  await engine.reload(record, { baseUrl: "https://site.test/" });
  return engine;
}

/** Drops what differs between two runs of one request (id, created, timings). */
const stable = (obj) =>
  JSON.parse(JSON.stringify(obj, (key, value) => (["id", "created", "extra"].includes(key) ? undefined : value)));

test("n choices and logprobs cross the worker boundary intact, streamed or not", async () => {
  const engine = await scriptedEngine("Hi café");
  const proxy = connect(engine);
  const chat = { messages: [{ role: "user", content: "x" }], n: 2, logprobs: true, top_logprobs: 2 };
  const here = await engine.chat.completions.create(chat);
  const there = await proxy.chat.completions.create(chat);
  assert.deepEqual(stable(there), stable(here));
  assert.deepEqual(
    there.choices.map((c) => [c.index, c.message.content]),
    [
      [0, "Hi café"],
      [1, "Hi café"],
    ],
  );
  assert.deepEqual(there.choices[1].logprobs.content.at(-1).bytes, [0xc3, 0xa9]);

  const streamed = { ...chat, stream: true, stream_options: { include_usage: true } };
  const local = [];
  for await (const c of await engine.chat.completions.create(streamed)) local.push(c);
  const remote = [];
  for await (const c of await proxy.chat.completions.create(streamed)) remote.push(c);
  assert.deepEqual(stable(remote), stable(local));
  assert.deepEqual(
    remote.filter((c) => c.choices[0]?.finish_reason).map((c) => c.choices[0].index),
    [0, 1],
  );
  assert.equal(remote.at(-1).usage.completion_tokens, here.usage.completion_tokens);

  const completion = { prompt: "x", n: 2, logprobs: 1, max_tokens: 3, stream: true };
  const chunks = [];
  for await (const c of await proxy.completions.create(completion)) chunks.push(c);
  const lp = chunks.filter((c) => c.choices[0].logprobs).map((c) => c.choices[0]);
  assert.deepEqual(
    lp.map((c) => [c.index, c.logprobs.tokens.length, Object.keys(c.logprobs.top_logprobs[0]).length]),
    [0, 0, 0, 1, 1, 1].map((i) => [i, 1, 1]),
  );
});

test("WebLLM's names cross the worker boundary with their arguments", async () => {
  const { engine, calls } = mockEngine();
  const proxy = connect(engine);
  await proxy.reload("tiny-q4f32_1"); // a variant id goes as it is: only the engine can tell it from a URL
  await proxy.reload();
  await proxy.resetChat(true);
  await proxy.interruptGenerate();
  assert.equal(calls[0][1], "tiny-q4f32_1");
  assert.equal(calls[1][1], undefined);
  assert.deepEqual(calls.slice(2), [["resetChat", true], ["interruptGenerate"]]);
});

test("runtimeStatsText, getMessage and the cached prompt tokens read the same through the worker", async () => {
  const engine = await scriptedEngine("Hi café");
  const proxy = connect(engine);
  const chat = { messages: [{ role: "user", content: "x" }] };
  const first = await proxy.chat.completions.create(chat);
  assert.equal(await proxy.getMessage(), "Hi café");
  assert.equal(await proxy.runtimeStatsText(), await engine.runtimeStatsText());
  assert.match(await proxy.runtimeStatsText(), /^prefill: \d+\.\d{4} tokens\/sec, decoding: \d+\.\d{4} tokens\/sec$/);
  assert.deepEqual(first.usage.prompt_tokens_details, { cached_tokens: 0 });
  const stats = await proxy.runtimeStats();
  assert.equal(stats.cached_tokens, 0);
  assert.equal(stats.prefill_tokens, first.usage.prompt_tokens);
});

test("CreateWebWorkerMLCEngine loads the appConfig's model in the worker, with WebLLM's progress reports", async () => {
  const files = {
    "mlc-chat-config.json": { vocab_size: 400, temperature: 0, eos_token_id: 2 },
    "tokenizer.json": fixture("tokenizer.json"),
    "tokenizer_config.json": fixture("tokenizer_config.json"),
  };
  const fetched = [];
  globalThis.fetch = async (url) => {
    fetched.push(String(url));
    const name = String(url).split("/").at(-1);
    return name in files ? new Response(JSON.stringify(files[name])) : new Response("missing", { status: 404 });
  };
  const tok = new TextTokenizer(files["tokenizer.json"], files["tokenizer_config.json"]);
  let loaded;
  const engine = new Engine({
    detectGpu: async () => ({ hasShaderF16: true, info: {} }),
    loadPipeline: async ({ record, onProgress }) => {
      loaded = record;
      onProgress({ phase: "download", loaded: 3, total: 4, text: "Fetching" });
      return new ScriptedPipeline([...tok.encode("Hi"), 2], { after: 2 });
    },
  });
  const hf = "https://huggingface.co/someone";
  const appConfig = {
    model_list: [
      { model: `${hf}/m-q4f16_1-MLC`, model_id: "m-q4f16_1", model_lib: "https://libs.test/m-q4f16_1.wasm" },
      { model: `${hf}/m-q4f32_1-MLC`, model_id: "m-q4f32_1", model_lib: "https://libs.test/m-q4f32_1.wasm" },
    ],
  };
  const reports = [];
  const proxy = await CreateWebWorkerMLCEngine(hostedWorker(engine), "m-q4f32_1", {
    appConfig,
    initProgressCallback: (r) => reports.push(r),
  });
  assert.ok(proxy instanceof WebWorkerEngine);
  assert.equal((await proxy.getModelInfo()).id, "m-q4f32_1");
  assert.equal(loaded.model_lib, "https://libs.test/m-q4f32_1.wasm");
  assert.ok(fetched.includes(`${hf}/m-q4f32_1-MLC/resolve/main/tokenizer.json`), fetched.join(" "));
  const reply = await proxy.chat.completions.create({ messages: [{ role: "user", content: "x" }] });
  assert.equal(reply.choices[0].message.content, "Hi");
  assert.equal(reports.length, 1);
  const { timeElapsed, ...report } = reports[0];
  assert.deepEqual(report, { phase: "download", loaded: 3, total: 4, text: "Fetching", progress: 0.75 });
  assert.equal(typeof timeElapsed, "number");
});

test("CreateWebWorkerMLCEngine refuses what it cannot do before the worker loads anything", async () => {
  const { engine, calls } = mockEngine();
  const worker = hostedWorker(engine);
  await assert.rejects(CreateWebWorkerMLCEngine(worker, "m"), (err) => {
    assert.ok(err instanceof InvalidRequestError);
    assert.equal(err.param, "engineConfig.appConfig");
    assert.match(err.tip, /webllmAppConfig\(manifest, manifestUrl\)|manifest\.json/);
    return true;
  });
  const appConfig = { model_list: [{ model: "https://x.test/m", model_id: "m", model_lib: "https://x.test/m.wasm" }] };
  await assert.rejects(CreateWebWorkerMLCEngine(worker, ["m", "n"], { appConfig }), UnsupportedParameterError);
  await assert.rejects(CreateWebWorkerMLCEngine(worker, "m", { appConfig }, { top_p: 0.5 }), /chatOpts \(top_p\)/);
  assert.deepEqual(calls, []);
});
