import { test } from "node:test";
import assert from "node:assert/strict";
import {
  parseChatRequest,
  parseCompletionRequest,
  chatChunk,
  usageChunk,
  chatCompletion,
  textChunk,
  textCompletion,
  makeUsage,
  newCompletionId,
  checkAgainstModel,
} from "../src/openai.js";
import { WebbuildError, ContextLengthExceededError, InvalidRequestError } from "../src/errors.js";
import { fixture } from "./helpers.js";

const { cases, model, model_cases: modelCases } = fixture("request_cases.json");

for (const c of cases) {
  test(`request case: ${c.name}`, () => {
    const parse = c.endpoint === "chat" ? parseChatRequest : parseCompletionRequest;
    if (c.ok) {
      const parsed = parse(c.request);
      for (const [key, value] of Object.entries(c.expect ?? {})) assert.deepEqual(parsed[key], value, key);
    } else {
      assert.throws(
        () => parse(c.request),
        (err) => {
          assert.ok(err instanceof WebbuildError);
          assert.equal(err.code, c.error.code);
          assert.equal(err.param, c.error.param);
          assert.equal(err.status, 400);
          return true;
        },
      );
    }
  });
}

const limits = { contextWindowSize: model.context_window_size, vocabSize: model.vocab_size };

for (const c of modelCases) {
  test(`model case: ${c.name}`, () => {
    const params = (c.endpoint === "chat" ? parseChatRequest : parseCompletionRequest)(c.request);
    if (c.ok) {
      assert.equal(checkAgainstModel(params, limits, c.prompt_tokens), c.expect.max_tokens);
    } else {
      assert.throws(
        () => checkAgainstModel(params, limits, c.prompt_tokens),
        (err) => {
          const cls = c.code === "context_length_exceeded" ? ContextLengthExceededError : InvalidRequestError;
          assert.ok(err instanceof cls, err.name);
          assert.equal(err.code, c.code);
          assert.equal(err.param, c.param);
          assert.equal(err.status, 400);
          return true;
        },
      );
    }
  });
}

test("model cases cover every rule on both endpoints, with both sides of each boundary", () => {
  const seen = new Set(modelCases.map((c) => `${c.endpoint} ${c.ok ? "ok" : `${c.code} ${c.param}`}`));
  for (const endpoint of ["chat", "completion"]) {
    for (const outcome of ["ok", "context_length_exceeded max_tokens", "invalid_request logit_bias"]) {
      assert.ok(seen.has(`${endpoint} ${outcome}`), `${endpoint} ${outcome}`);
    }
    const promptParam = endpoint === "chat" ? "messages" : "prompt";
    assert.ok(seen.has(`${endpoint} context_length_exceeded ${promptParam}`), `${endpoint} ${promptParam}`);
  }
});

test("context errors name the numbers; logit_bias errors name the id and the vocabulary size", () => {
  const chat = parseChatRequest({ messages: [{ role: "user", content: "x" }], max_tokens: 23 });
  assert.throws(() => checkAgainstModel(chat, limits, 33), /33.*32/);
  assert.throws(() => checkAgainstModel(chat, limits, 10), /10.*23.*32/);
  const biased = parseCompletionRequest({ prompt: "x", logit_bias: { 100: 1 } });
  assert.throws(() => checkAgainstModel(biased, limits, 1), /100.*100/);
  assert.equal(checkAgainstModel(biased, { contextWindowSize: 32 }, 1), 16, "no vocabSize: ids unchecked");
});

test("model defaults fill what the request leaves out; the request wins", () => {
  const defaults = { temperature: 0.2, top_p: 0.9, presence_penalty: 0.5 };
  const a = parseChatRequest({ messages: [{ role: "user", content: "x" }] }, defaults);
  assert.equal(a.temperature, 0.2);
  assert.equal(a.top_p, 0.9);
  assert.equal(a.presence_penalty, 0.5);
  const b = parseChatRequest({ messages: [{ role: "user", content: "x" }], temperature: 0.7 }, defaults);
  assert.equal(b.temperature, 0.7);
});

test("chat chunks have OpenAI's shape; usage: null appears only with include_usage", () => {
  const head = { id: newCompletionId("chatcmpl"), created: 1, model: "m" };
  assert.match(head.id, /^chatcmpl-/);
  const first = chatChunk(head, { role: "assistant", content: "" }, null, false);
  assert.deepEqual(first, {
    id: head.id,
    object: "chat.completion.chunk",
    created: 1,
    model: "m",
    choices: [{ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }],
  });
  assert.equal(chatChunk(head, {}, "stop", true).usage, null);
  const last = usageChunk(head, makeUsage(3, 4), "chat.completion.chunk");
  assert.deepEqual(last.choices, []);
  assert.deepEqual(last.usage, { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 });
});

test("chat.completion and text_completion carry message/text, finish_reason and usage", () => {
  const head = { id: "x", created: 1, model: "m" };
  const usage = makeUsage(2, 1, { decode_tokens_per_s: 5 });
  const c = chatCompletion(head, [{ text: "hi", finishReason: "length", logprobs: null }], usage);
  assert.equal(c.object, "chat.completion");
  assert.deepEqual(c.choices[0].message, { role: "assistant", content: "hi" });
  assert.equal(c.choices[0].finish_reason, "length");
  assert.equal(c.choices[0].logprobs, null);
  assert.equal(c.usage.extra.decode_tokens_per_s, 5);
  const t = textCompletion(head, [{ text: "yo", finishReason: "stop", logprobs: null }], usage);
  assert.equal(t.object, "text_completion");
  assert.equal(t.choices[0].text, "yo");
  assert.equal(t.choices[0].logprobs, null);
  assert.ok(!("usage" in textChunk(head, "", null, false)));
  assert.equal(textChunk(head, "", "stop", true).usage, null);
});

// Two generated tokens: "é" (offset 0) and " 東" (offset 1), the second with a top-2 whose texts collide.
const entries = [
  { id: 10, token: "é", logprob: -0.5, top: [{ id: 10, token: "é", logprob: -0.5 }], offset: 0 },
  {
    id: 11,
    token: " 東",
    logprob: -1.25,
    top: [
      { id: 12, token: "__proto__", logprob: -0.75 },
      { id: 11, token: " 東", logprob: -1.25 },
      { id: 13, token: " 東", logprob: -2 },
    ],
    offset: 1,
  },
];

test("n choices are indexed in order, each with its own finish_reason and logprobs", () => {
  const head = { id: "x", created: 1, model: "m" };
  const c = chatCompletion(
    head,
    [
      { text: "a", finishReason: "stop", logprobs: [] },
      { text: "b", finishReason: "length", logprobs: [] },
    ],
    makeUsage(2, 4),
  );
  assert.deepEqual(
    c.choices.map((x) => [x.index, x.message.content, x.finish_reason]),
    [
      [0, "a", "stop"],
      [1, "b", "length"],
    ],
  );
  assert.deepEqual(c.choices[1].logprobs, { content: [] });
  assert.equal(chatChunk(head, {}, "stop", false, { index: 3 }).choices[0].index, 3);
});

test("chat logprobs: {content: [{token, logprob, bytes, top_logprobs}]}, bytes as UTF-8", () => {
  const head = { id: "x", created: 1, model: "m" };
  const c = chatCompletion(head, [{ text: "é 東", finishReason: "stop", logprobs: entries }], makeUsage(1, 2));
  assert.deepEqual(c.choices[0].logprobs.content[0], {
    token: "é",
    logprob: -0.5,
    bytes: [0xc3, 0xa9],
    top_logprobs: [{ token: "é", logprob: -0.5, bytes: [0xc3, 0xa9] }],
  });
  const second = c.choices[0].logprobs.content[1];
  assert.deepEqual(second.bytes, [0x20, 0xe6, 0x9d, 0xb1]);
  assert.deepEqual(
    second.top_logprobs.map((t) => t.token),
    ["__proto__", " 東", " 東"],
  );
  const chunk = chatChunk(head, { content: "é" }, null, false, { index: 1, logprobs: entries.slice(0, 1) });
  assert.equal(chunk.choices[0].index, 1);
  assert.deepEqual(
    chunk.choices[0].logprobs.content.map((e) => e.token),
    ["é"],
  );
});

test("completion logprobs: parallel lists, top_logprobs as {text: logprob}, text_offset", () => {
  const head = { id: "x", created: 1, model: "m" };
  const t = textCompletion(head, [{ text: "é 東", finishReason: "stop", logprobs: entries }], makeUsage(1, 2));
  const lp = t.choices[0].logprobs;
  assert.deepEqual(lp.tokens, ["é", " 東"]);
  assert.deepEqual(lp.token_logprobs, [-0.5, -1.25]);
  assert.deepEqual(lp.text_offset, [0, 1]);
  assert.deepEqual(lp.top_logprobs[0], { é: -0.5 });
  // Alternatives decoding to the same text keep the better one; "__proto__" is an ordinary key.
  assert.deepEqual(Object.keys(lp.top_logprobs[1]), ["__proto__", " 東"]);
  assert.equal(lp.top_logprobs[1][" 東"], -1.25);
  assert.equal(Object.getPrototypeOf(lp.top_logprobs[1]), Object.prototype);
  assert.equal(JSON.stringify(lp.top_logprobs[1]), '{"__proto__":-0.75," 東":-1.25}');
  const chunk = textChunk(head, " 東", null, true, { index: 2, logprobs: entries.slice(1) });
  assert.deepEqual(chunk.choices[0].logprobs.text_offset, [1]);
  assert.equal(chunk.choices[0].index, 2);
});

test("parsed requests carry n, logprobs and top_logprobs for both endpoints", () => {
  const chat = parseChatRequest({ messages: [{ role: "user", content: "x" }] });
  assert.deepEqual([chat.n, chat.logprobs, chat.top_logprobs], [1, false, 0]);
  const c = parseCompletionRequest({ prompt: "x", logprobs: 5, n: 16 });
  assert.deepEqual([c.n, c.logprobs, c.top_logprobs], [16, true, 5]);
  const none = parseCompletionRequest({ prompt: "x", logprobs: null, echo: true });
  assert.deepEqual([none.logprobs, none.top_logprobs], [false, 0]);
  // The prompt's own log-probabilities (what OpenAI adds for echo) are not computed.
  assert.throws(() => parseCompletionRequest({ prompt: "x", logprobs: 0, echo: true }), {
    code: "unsupported_parameter",
    param: "echo",
  });
  assert.throws(() => parseChatRequest({ messages: [{ role: "user", content: "x" }], n: 1.5 }), { param: "n" });
  assert.throws(
    () => parseChatRequest({ messages: [{ role: "user", content: "x" }], logprobs: true, top_logprobs: 1.5 }),
    {
      param: "top_logprobs",
    },
  );
  assert.throws(
    () => parseChatRequest({ messages: [{ role: "user", content: "x" }], logprobs: false, top_logprobs: 0 }),
    { param: "top_logprobs" },
  );
});
