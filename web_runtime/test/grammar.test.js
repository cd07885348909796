// Grammars through web-xgrammar on the fixture tokenizer: the Python engine's schema rewrite, the tokenizer
// facts xgrammar needs, masks that allow exactly what the grammar allows, and schemas it cannot follow as
// typed errors on the request's param.
import { test } from "node:test";
import assert from "node:assert/strict";
import { fixture } from "./helpers.js";
import { Grammars, LOWEST, jsonSafe, maskLogits, tokenizerFacts, toolStructuralTag } from "../src/grammar.js";
import { TextTokenizer } from "../src/tokenizer.js";
import { InvalidRequestError } from "../src/errors.js";

const tokenizerJson = fixture("tokenizer.json");
const tok = new TextTokenizer(tokenizerJson, fixture("tokenizer_config.json"));
const EOS = 2;
const VOCAB = 400;
const grammars = new Grammars(tokenizerJson, VOCAB, [EOS]);
const allowed = (/** @type {Int32Array} */ mask) =>
  Array.from({ length: VOCAB }, (_, t) => t).filter((t) => (mask[t >> 5] >>> (t & 31)) & 1);

/**
 * Walks `text`'s tokens through the grammar, checking each is allowed by the mask before it; returns the
 * tokens allowed at the end.
 * @param {import("../src/grammar.js").Constraint} constraint
 * @param {string} text
 */
async function walk(constraint, text) {
  const matcher = await constraint.matcher();
  try {
    for (const id of tok.encode(text)) {
      assert.ok(allowed(await matcher.bitmask()).includes(id), `token ${id} of ${JSON.stringify(text)} masked`);
      matcher.accept(id);
    }
    return { end: allowed(await matcher.bitmask()), terminated: matcher.terminated };
  } finally {
    matcher.dispose();
  }
}

test("length-limited strings become a pattern of JSON-safe characters, as grammar.py's json_safe", () => {
  const schema = {
    type: "object",
    properties: { a: { type: "string", maxLength: 12 }, b: { type: "string", minLength: 2, pattern: "^x+$" } },
    items: [{ type: "string", minLength: 1 }],
  };
  assert.deepEqual(jsonSafe(schema), {
    type: "object",
    properties: { a: { type: "string", pattern: "^[ !#-\\[\\]-\\u07ff]{0,12}$" }, b: schema.properties.b },
    items: [{ type: "string", pattern: "^[ !#-\\[\\]-\\u07ff]{1,}$" }],
  });
});

test("tokenizer facts: every token by id, byte-level or byte-fallback decoding, a prepended space", () => {
  const facts = tokenizerFacts(tokenizerJson);
  assert.equal(facts.vocabType, "byte_level");
  assert.equal(facts.prependSpace, false);
  assert.equal(facts.vocab.length, VOCAB);
  assert.equal(facts.vocab[EOS], tokenizerJson.added_tokens.find((t) => t.id === EOS).content);
  const spm = {
    model: { type: "BPE", vocab: { "<unk>": 0, "▁a": 2 } },
    added_tokens: [{ id: 1, content: "<s>" }],
    normalizer: { type: "Sequence", normalizers: [{ type: "Prepend", prepend: "▁" }] },
    decoder: { type: "Sequence", decoders: [{ type: "ByteFallback" }] },
  };
  assert.deepEqual(tokenizerFacts(spm), { vocab: ["<unk>", "<s>", "▁a"], vocabType: "byte_fallback", prependSpace: true });
});

test("a schema's mask allows its JSON and, once complete, only the stop token", async () => {
  const schema = { type: "object", properties: { c: { enum: ["red", "blue"] }, n: { type: "integer" } }, required: ["c", "n"] };
  const constraint = await grammars.responseFormat({ type: "json_schema", schema });
  try {
    const done = await walk(constraint, '{"c": "blue", "n": 42}');
    assert.deepEqual(done.end, [EOS]);
    await assert.rejects(walk(constraint, '{"c": "green"'), /masked/);
    await assert.rejects(walk(constraint, '{"c":"red"'), /masked/, "one line with Python's separators");
  } finally {
    constraint.dispose();
  }
});

test("json_object allows any object and nothing else", async () => {
  const constraint = await grammars.responseFormat({ type: "json_object" });
  try {
    assert.deepEqual((await walk(constraint, '{"k": [1, {"z": null}]}')).end, [EOS]);
    await assert.rejects(walk(constraint, "[1]"), /masked/);
  } finally {
    constraint.dispose();
  }
});

test("maskLogits sets what the mask forbids to float32's lowest value", () => {
  const logits = Float32Array.from({ length: 40 }, (_, i) => i);
  const mask = new Int32Array([0b101, 1 << 3]);
  maskLogits(logits, mask);
  assert.deepEqual(
    [...logits].map((v, i) => (v === Math.fround(LOWEST) ? null : i)).filter((v) => v !== null),
    [0, 2, 35],
  );
});

test("schemas xgrammar cannot follow are InvalidRequestErrors on the param, with its reason", async () => {
  await assert.rejects(grammars.responseFormat({ type: "json_schema", schema: { type: "integer", minimum: 5, maximum: 1 } }), (err) => {
    assert.ok(err instanceof InvalidRequestError);
    assert.equal(err.param, "response_format");
    assert.match(err.message, /not a JSON Schema this engine can follow: .*minimum greater than maximum/);
    return true;
  });
  const tools = [{ type: "function", function: { name: "f", parameters: { type: "nope" } } }];
  await assert.rejects(
    grammars.toolCalls({ structuralTag: "qwen_3", tools, choice: "required", name: null, parallel: true }),
    (err) => err instanceof InvalidRequestError && err.param === "tools" && /nope/.test(err.message),
  );
  // The wasm keeps working after a refused schema.
  (await grammars.responseFormat({ type: "json_object" })).dispose();
});

const WEATHER = { type: "object", properties: { city: { type: "string" } }, required: ["city"] };
const TOOLS = [
  { type: "function", function: { name: "get_weather", parameters: WEATHER } },
  { type: "function", function: { name: "get_time" } },
];

test("required and named choices allow only calls, with arguments that follow the tool's schema", async () => {
  const call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>';
  for (const [choice, name] of [["required", null], ["function", "get_weather"]]) {
    const constraint = await grammars.toolCalls({ structuralTag: "qwen_3", tools: TOOLS, choice, name, parallel: false });
    try {
      assert.ok((await walk(constraint, call)).end.includes(EOS));
      await assert.rejects(walk(constraint, "Hello"), /masked/);
      await assert.rejects(walk(constraint, '<tool_call>\n{"name": "get_weather", "arguments": {"town"'), /masked/);
    } finally {
      constraint.dispose();
    }
  }
});

test("auto allows text, a reasoning block first (Qwen 3), then calls; llama calls take parameters", async () => {
  const qwen = await grammars.toolCalls({ structuralTag: "qwen_3", tools: TOOLS, choice: "auto", name: null, parallel: true });
  const text = '<think>hm</think>\n\nSure. <tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>';
  assert.ok((await walk(qwen, text)).end.includes(EOS));
  qwen.dispose();
  const llama = await grammars.toolCalls({ structuralTag: "llama", tools: TOOLS, choice: "required", name: null, parallel: true });
  assert.ok((await walk(llama, '{"name": "get_weather", "parameters": {"city": "Rome"}}')).end.includes(EOS));
  llama.dispose();
  assert.deepEqual(toolStructuralTag({ structuralTag: "llama", tools: TOOLS, choice: "function", name: "get_time", parallel: true }), {
    type: "structural_tag",
    format: { type: "tag", begin: '{"name": "get_time", "parameters": ', content: { type: "json_schema", json_schema: true }, end: "}" },
  });
});
