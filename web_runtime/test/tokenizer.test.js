import { test } from "node:test";
import assert from "node:assert/strict";
import { fixture } from "./helpers.js";
import { TextTokenizer, IncrementalDecoder } from "../src/tokenizer.js";

// fixtures/tokenizer.json: a 400-token byte-level BPE made with the Python `tokenizers` library;
// "Hello world! END" -> [282, 367, 314, 3, 357, 38] there.
const tok = new TextTokenizer(fixture("tokenizer.json"), fixture("tokenizer_config.json"));

test("encodes like the Python tokenizers library and decodes back", () => {
  assert.deepEqual(tok.encode("Hello world! END"), [282, 367, 314, 3, 357, 38]);
  assert.equal(tok.decode([282, 367, 314, 3, 357, 38]), "Hello world! END");
  assert.equal(tok.tokenId("<|im_end|>"), 2);
  assert.equal(tok.eosToken, "<|im_end|>");
});

test("merges written as 'left right' strings (a tokenizer.json made from a GGUF) tokenize like [left, right] pairs", () => {
  const json = fixture("tokenizer.json");
  assert.ok(Array.isArray(json.model.merges[0]));
  json.model.merges = json.model.merges.map((/** @type {string[]} */ pair) => pair.join(" "));
  const strings = new TextTokenizer(json, fixture("tokenizer_config.json"));
  for (const text of ["Hello world! END", "the cat sat on the mat", "café 東京 😀 ok", "  two  spaces\n"]) {
    assert.deepEqual(strings.encode(text), tok.encode(text), text);
  }
});

test("special tokens in a rendered prompt become single ids and are skipped when decoding", () => {
  const ids = tok.encode("<|im_start|>user\nhi<|im_end|>\n");
  assert.equal(ids[0], 1);
  assert.ok(ids.includes(2));
  assert.equal(tok.decode(ids), "user\nhi\n");
});

test("incremental decoding emits the same text as decoding everything, and never half a character", () => {
  const text = "café 東京 😀 ok";
  const ids = tok.encode(text);
  const dec = new IncrementalDecoder(tok);
  const pieces = ids.map((id) => dec.push(id));
  pieces.push(dec.flush());
  assert.equal(pieces.join(""), text);
  for (const p of pieces) assert.ok(!p.includes("\uFFFD"), JSON.stringify(p));
});
