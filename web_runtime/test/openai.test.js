import { test } from "node:test";
import assert from "node:assert/strict";
import {
  parseChatRequest,
  parseCompletionRequest,
  chatChunk,
  usageChunk,
  chatCompletion,
  textCompletion,
  makeUsage,
  newCompletionId,
} from "../openai.js";
import { WebbuildError } from "../errors.js";
import { fixture } from "./helpers.js";

const { cases } = fixture("request_cases.json");

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
  const c = chatCompletion(head, "hi", "length", usage);
  assert.equal(c.object, "chat.completion");
  assert.deepEqual(c.choices[0].message, { role: "assistant", content: "hi" });
  assert.equal(c.choices[0].finish_reason, "length");
  assert.equal(c.usage.extra.decode_tokens_per_s, 5);
  const t = textCompletion(head, "yo", "stop", usage);
  assert.equal(t.object, "text_completion");
  assert.equal(t.choices[0].text, "yo");
  assert.ok(!("usage" in textCompletion(head, "", null, undefined)));
});
