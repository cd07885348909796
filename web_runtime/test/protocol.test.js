import { test } from "node:test";
import assert from "node:assert/strict";
import * as errors from "../src/errors.js";
import { ERROR_CLASSES, WebbuildError, ShaderF16UnsupportedError, InvalidRequestError } from "../src/errors.js";
import {
  serializeError,
  deserializeError,
  ProtocolClient,
  serveProtocol,
  AsyncQueue,
  ENGINE_METHODS,
} from "../src/protocol.js";
import { portPair } from "./helpers.js";

test("every error class survives a structured-clone round trip as the same class", () => {
  for (const [name, cls] of Object.entries(ERROR_CLASSES)) {
    const original = new cls(`a ${name}`, { param: "messages", tip: "do this", data: { limit: 7 } });
    const back = deserializeError(structuredClone(serializeError(original)));
    assert.equal(back.constructor, cls, name);
    assert.ok(back instanceof WebbuildError);
    assert.equal(back.name, name);
    assert.equal(back.message, `a ${name}`);
    assert.equal(back.code, original.code);
    assert.equal(back.type, original.type);
    assert.equal(back.param, "messages");
    assert.equal(back.tip, "do this");
    assert.deepEqual(back.data, { limit: 7 });
  }
});

test("errors.js exports each class it can rebuild, with distinct codes", () => {
  const codes = Object.values(ERROR_CLASSES).map((c) => c.code);
  assert.equal(new Set(codes).size, codes.length);
  for (const name of Object.keys(ERROR_CLASSES)) assert.equal(errors[name], ERROR_CLASSES[name]);
});

test("a foreign error becomes an internal_error; an unknown class keeps its code", () => {
  const plain = deserializeError(serializeError(new TypeError("boom")));
  assert.equal(plain.constructor, WebbuildError);
  assert.equal(plain.code, "internal_error");
  assert.equal(plain.message, "boom");

  const weird = deserializeError({
    ...serializeError(new InvalidRequestError("x")),
    name: "FutureError",
    code: "future",
  });
  assert.equal(weird.constructor, WebbuildError);
  assert.equal(weird.code, "future");
  assert.equal(weird.type, "invalid_request_error");
});

test("ShaderF16UnsupportedError names the f32 variant and renders OpenAI's envelope", () => {
  const err = ShaderF16UnsupportedError.forModel("tiny-q4f16_1", "tiny-q4f32_1", true);
  assert.match(err.message, /tiny-q4f32_1/);
  assert.equal(err.code, "shader_f16_unsupported");
  assert.equal(err.data.f32_variant, "tiny-q4f32_1");
  assert.deepEqual(Object.keys(err.toJSON().error), ["message", "type", "param", "code"]);
});

test("calls return values, forward progress, and rethrow typed errors", async () => {
  const [pagePort, hostPort] = portPair();
  serveProtocol(hostPort, {
    reload: async ([source], ctx) => {
      ctx.onProgress({ loaded: 1, total: 2 });
      ctx.onProgress({ loaded: 2, total: 2 });
      return { id: source };
    },
    tokenize: () => {
      throw new InvalidRequestError("bad text", { param: "text" });
    },
  });
  const client = new ProtocolClient(pagePort);
  const seen = [];
  const info = await client.call("reload", ["m"], { onProgress: (p) => seen.push(p.loaded) });
  assert.deepEqual(info, { id: "m" });
  assert.deepEqual(seen, [1, 2]);
  await assert.rejects(
    client.call("tokenize", ["x"]),
    (err) => err instanceof InvalidRequestError && err.param === "text",
  );
  await assert.rejects(client.call("noSuchKind", []), /Unknown engine call/);
});

test("a streamed result arrives as an async iterator; errors mid-stream are thrown by the iterator", async () => {
  const [pagePort, hostPort] = portPair();
  serveProtocol(hostPort, {
    chatCompletion: async () =>
      (async function* () {
        yield 1;
        yield 2;
        throw new errors.ContextLengthExceededError("too long");
      })(),
  });
  const client = new ProtocolClient(pagePort);
  const stream = await client.call("chatCompletion", [{}]);
  const got = [];
  await assert.rejects(async () => {
    for await (const x of stream) got.push(x);
  }, errors.ContextLengthExceededError);
  assert.deepEqual(got, [1, 2]);
});

test("breaking out of a stream cancels it on the host (its signal aborts, the generator cleans up)", async () => {
  const [pagePort, hostPort] = portPair();
  let cleaned = false;
  let aborted = false;
  serveProtocol(hostPort, {
    completion: async (args, ctx) =>
      (async function* () {
        try {
          for (let i = 0; ; i++) {
            if (ctx.signal.aborted) {
              aborted = true;
              return;
            }
            yield i;
            await new Promise((r) => setTimeout(r, 5));
          }
        } finally {
          cleaned = true;
        }
      })(),
  });
  const client = new ProtocolClient(pagePort);
  const stream = await client.call("completion", [{}]);
  for await (const x of stream) if (x === 2) break;
  await new Promise((r) => setTimeout(r, 60));
  assert.ok(cleaned);
  assert.ok(aborted || cleaned);
  assert.equal(client.pending.size, 0);
});

test("a worker that fails to start rejects pending and later calls", async () => {
  const port = new EventTarget();
  port.postMessage = () => {};
  const client = new ProtocolClient(port);
  const pending = client.call("reload", ["m"]);
  port.dispatchEvent(Object.assign(new Event("error"), { message: "SyntaxError in vendor/jinja.js" }));
  await assert.rejects(pending, /vendor\/jinja\.js/);
  await assert.rejects(client.call("getModelInfo", []), /vendor\/jinja\.js/);
});

test("AsyncQueue delivers pushed items in order, then ends", async () => {
  const q = new AsyncQueue();
  q.push("a");
  setTimeout(() => {
    q.push("b");
    q.close();
  }, 1);
  const out = [];
  for await (const x of q) out.push(x);
  assert.deepEqual(out, ["a", "b"]);
});

test("ENGINE_METHODS is the single list of callable kinds", () => {
  assert.ok(Object.isFrozen(ENGINE_METHODS));
  for (const kind of ["reload", "chatCompletion", "completion", "forwardTokens", "interrupt", "unload"]) {
    assert.ok(kind in ENGINE_METHODS, kind);
  }
});
