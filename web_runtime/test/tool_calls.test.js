// Tool calls parsed out of a model's text, whole or piece by piece, in each format a chat template teaches:
// the cases of tests/engine/test_tool_calls.py, so both engines parse alike.
import { test } from "node:test";
import assert from "node:assert/strict";
import { FORMATS, ToolCallParser, callDeltas, pythonJson, splitToolCalls, toolFormatFor } from "../src/tool_calls.js";
import { UnsupportedParameterError } from "../src/errors.js";

const HERMES = FORMATS.hermes;
const LLAMA = FORMATS.llama3_json;
const TWO_CALLS =
  'Let me look.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n' +
  '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>';
const namesAndArguments = (/** @type {any[]} */ calls) =>
  calls.map((c) => [c.function.name, JSON.parse(c.function.arguments)]);

test("hermes calls are split from the content, each with its own id", () => {
  const { content, calls } = splitToolCalls(HERMES, TWO_CALLS);
  assert.equal(content, "Let me look.");
  assert.deepEqual(namesAndArguments(calls), [
    ["get_weather", { city: "Paris" }],
    ["get_time", {}],
  ]);
  assert.ok(calls.every((c) => /^call_[0-9a-f]{24}$/.test(c.id) && c.type === "function"));
  assert.equal(new Set(calls.map((c) => c.id)).size, 2);
});

test("llama calls take their parameters as arguments; a call alone has null content", () => {
  const { content, calls } = splitToolCalls(LLAMA, '{"name": "get_weather", "parameters": {"city": "Oslo"}}');
  assert.equal(content, null);
  assert.deepEqual(namesAndArguments(calls), [["get_weather", { city: "Oslo" }]]);
});

test("text without a complete call stays content", () => {
  assert.deepEqual(splitToolCalls(HERMES, "Just words."), { content: "Just words.", calls: [] });
  const cut = '<tool_call>\n{"name": "get_weather", "argum';
  assert.deepEqual(splitToolCalls(HERMES, `Hi ${cut}`), { content: `Hi ${cut}`, calls: [] });
});

for (const size of [1, 2, 5, 13]) {
  test(`pieces of ${size} give the same content and calls and never show part of a call`, () => {
    const parser = new ToolCallParser(HERMES);
    const pieces = [];
    for (let start = 0; start < TWO_CALLS.length; start += size) pieces.push(...parser.push(TWO_CALLS.slice(start, start + size)));
    pieces.push(...parser.flush());
    const content = pieces.map((p) => (p.kind === "content" ? p.text : "")).join("");
    assert.equal(content, "Let me look.");
    assert.deepEqual(namesAndArguments(pieces.flatMap((p) => (p.kind === "call" ? [p.call] : []))), [
      ["get_weather", { city: "Paris" }],
      ["get_time", {}],
    ]);
  });
}

test("a streamed call is its name, then its arguments as Python's json.dumps writes them", () => {
  const { calls } = splitToolCalls(HERMES, '<tool_call>{"name": "f", "arguments": {"x": 1, "y": ["é", {"z": null}]}}</tool_call>');
  const [head, args] = callDeltas(3, calls[0]);
  assert.deepEqual(head, { index: 3, id: calls[0].id, type: "function", function: { name: "f", arguments: "" } });
  assert.deepEqual(args, { index: 3, function: { arguments: '{"x": 1, "y": ["é", {"z": null}]}' } });
  assert.equal(pythonJson({ a: "q\"\n" }), '{"a": "q\\"\\n"}');
});

test("tools a model's template cannot show are refused on tools; none and no tools need no format", () => {
  const tools = [{ type: "function", function: { name: "f" } }];
  assert.equal(toolFormatFor({ tools, tool_choice: "auto" }, "hermes", "m"), HERMES);
  assert.equal(toolFormatFor({ tools, tool_choice: "none" }, null, "m"), null);
  assert.equal(toolFormatFor({ tools: [], tool_choice: "auto" }, null, "m"), null);
  assert.throws(
    () => toolFormatFor({ tools, tool_choice: "required" }, null, "tiny"),
    (err) => err instanceof UnsupportedParameterError && err.param === "tools" && /tiny's chat template/.test(err.message),
  );
});
