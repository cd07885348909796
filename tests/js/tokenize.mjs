// Encodes and decodes text with the browser runtime's tokenizer (web_runtime/src/tokenizer.js over
// @huggingface/tokenizers), for Python tests to compare with their references.
//
// usage: node tokenize.mjs < request.json
// request: {"tokenizer": tokenizer.json text, "config": tokenizer_config.json object, "texts": [str, ...]}
// reply:   [{"ids": [..], "decoded": str, "streamed": str}, ...] per text: its ids (no special tokens added),
//          those ids decoded at once, and decoded one token at a time as a chat reply streams
import fs from "node:fs";
import { IncrementalDecoder, TextTokenizer } from "../../web_runtime/src/tokenizer.js";

const request = JSON.parse(fs.readFileSync(0, "utf8"));
const tokenizer = new TextTokenizer(request.tokenizer, request.config);
const reply = request.texts.map((/** @type {string} */ text) => {
  const ids = tokenizer.encode(text);
  const stream = new IncrementalDecoder(tokenizer);
  const streamed = ids.map((id) => stream.push(id)).join("") + stream.flush();
  return { ids, decoded: tokenizer.decode(ids), streamed };
});
process.stdout.write(JSON.stringify(reply));
