// Grammar-constrained decoding with xgrammar (@mlc-ai/web-xgrammar): `response_format` JSON and tool calls,
// under the rules of the Python engine (webbuild/engine/grammar.py). A request's grammar is compiled once
// (a JSON Schema, any JSON object, or the calls of the model's tool-call format as an xgrammar structural
// tag); each choice walks it with its own matcher, whose bitmask of the tokens allowed next (32 tokens an
// int32) masks the logits: on the GPU with the model library's apply_bitmask_inplace (sampling.js), or here
// on the CPU, at float32's lowest value as that kernel writes.

import { loadXgrammar, xgrammarPrinted } from "./vendor.js";
import { InvalidRequestError } from "./errors.js";
import { errorText } from "./config.js";

/** float32's lowest value: what a masked logit becomes. */
export const LOWEST = -3.4028234663852886e38;

/**
 * `schema` with every length-limited string (minLength/maxLength, no pattern or format of its own) given as
 * a pattern of characters from space to U+07FF without quote or backslash: xgrammar turns such lengths into
 * a rule that lets raw control characters into the string (not JSON), and its character classes take
 * surrogates and overlong UTF-8 as one character. The same rewrite as grammar.py's json_safe.
 * @param {any} schema
 * @returns {any}
 */
export function jsonSafe(schema) {
  if (Array.isArray(schema)) return schema.map(jsonSafe);
  if (schema === null || typeof schema !== "object") return schema;
  /** @type {Record<string, any>} */
  const out = Object.fromEntries(Object.entries(schema).map(([k, v]) => [k, jsonSafe(v)]));
  const limited = "minLength" in out || "maxLength" in out;
  if (out.type === "string" && limited && !("pattern" in out) && !("format" in out)) {
    const low = Math.trunc(Number(out.minLength ?? 0));
    const high = out.maxLength == null ? "" : String(Math.trunc(Number(out.maxLength)));
    delete out.minLength;
    delete out.maxLength;
    out.pattern = `^[ !#-\\[\\]-\\u07ff]{${low},${high}}$`;
  }
  return out;
}

/**
 * What xgrammar's TokenizerInfo needs of a Hugging Face tokenizer.json, read as xgrammar reads it
 * (TokenizerInfo.from_huggingface): every token's text by id, how tokens encode bytes (a decoder with
 * ByteFallback: "<0xNN>" tokens; with ByteLevel: GPT-2's byte alphabet; else raw text), and whether the
 * tokenizer puts a space before the text ("▁" prepended by the normalizer or a Metaspace pre-tokenizer).
 * @param {Record<string, any>} tokenizerJson
 * @returns {{vocab: string[], vocabType: "byte_fallback" | "byte_level" | "raw", prependSpace: boolean}}
 */
export function tokenizerFacts(tokenizerJson) {
  /** @type {Map<number, string>} */
  const byId = new Map();
  const model = tokenizerJson.model ?? {};
  if (Array.isArray(model.vocab)) {
    model.vocab.forEach((/** @type {[string, number]} */ entry, /** @type {number} */ id) => byId.set(id, entry[0]));
  } else {
    for (const [token, id] of Object.entries(model.vocab ?? {})) byId.set(Number(id), token);
  }
  for (const added of tokenizerJson.added_tokens ?? []) byId.set(added.id, added.content);
  const size = byId.size === 0 ? 0 : Math.max(...byId.keys()) + 1;
  const vocab = Array.from({ length: size }, (_, id) => byId.get(id) ?? "");
  const decoder = JSON.stringify(tokenizerJson.decoder ?? null);
  const vocabType = decoder.includes('"ByteFallback"')
    ? "byte_fallback"
    : decoder.includes('"ByteLevel"')
      ? "byte_level"
      : "raw";
  const prepends = (/** @type {any} */ node) => {
    const text = JSON.stringify(node ?? null);
    return (
      /"type":"Prepend","prepend":"▁"/.test(text) ||
      (/"type":"Metaspace"/.test(text) && /"prepend_scheme":"(first|always)"|"add_prefix_space":true/.test(text))
    );
  };
  return { vocab, vocabType, prependSpace: prepends(tokenizerJson.normalizer) || prepends(tokenizerJson.pre_tokenizer) };
}

/**
 * @typedef {object} ToolGrammar  a request's tools as the grammar of its calls
 * @property {string} structuralTag  the format's name ("qwen_3", "llama"; tool_calls.js FORMATS)
 * @property {Record<string, any>[]} tools  OpenAI's tools, as parsed
 * @property {string} choice  auto | required | function
 * @property {string | null} name  the function a named choice forces
 * @property {boolean} parallel
 */

/** The calls of each format, as xgrammar 0.2's get_model_structural_tag writes them (the Python engine's). */
const CALL_TAGS = {
  qwen_3: {
    begin: (/** @type {string} */ name) => `<tool_call>\n{"name": ${JSON.stringify(name)}, "arguments": `,
    end: "}\n</tool_call>",
    trigger: "<tool_call>",
  },
  llama: {
    begin: (/** @type {string} */ name) => `{"name": ${JSON.stringify(name)}, "parameters": `,
    end: "}",
    trigger: '{"name": ',
  },
};

/**
 * The structural tag of a request's calls, as the Python engine's (xgrammar 0.2's get_model_structural_tag)
 * in the formats web-xgrammar 0.1.27 reads: a named choice is that one call; required is at least one call
 * (one, without parallel calls); auto lets the model write text, a call starting at its trigger, and for
 * Qwen 3 a reasoning block first (an `or` of both: 0.1.27 has no `optional`).
 * @param {ToolGrammar} spec
 * @returns {Record<string, any>}
 */
export function toolStructuralTag({ structuralTag, tools, choice, name, parallel }) {
  const format = CALL_TAGS[/** @type {keyof CALL_TAGS} */ (structuralTag)];
  if (!format) throw new InvalidRequestError(`Unknown tool-call format ${structuralTag}.`, { param: "tools" });
  const tag = (/** @type {Record<string, any>} */ fn) => ({
    type: "tag",
    begin: format.begin(fn.name),
    content: { type: "json_schema", json_schema: jsonSafe(fn.parameters ?? true) },
    end: format.end,
  });
  const functions = tools.map((t) => t.function);
  if (choice === "function") {
    return { type: "structural_tag", format: tag(functions.find((f) => f.name === name)) };
  }
  const calls = {
    type: "triggered_tags",
    triggers: [format.trigger],
    tags: functions.map(tag),
    at_least_one: choice === "required",
    stop_after_first: !parallel,
    excludes: ["<think>", "</think>"],
  };
  if (choice !== "auto" || structuralTag !== "qwen_3") return { type: "structural_tag", format: calls };
  const thinking = { type: "tag", begin: "<think>", content: { type: "any_text" }, end: "</think>" };
  const thought = { type: "sequence", elements: [thinking, { type: "const_string", value: "\n\n" }, calls] };
  return { type: "structural_tag", format: { type: "or", elements: [thought, calls] } };
}

/**
 * Runs an xgrammar compile, keeping the reason it fails: its wasm prints "[FATAL] file:line: reason" (see
 * vendor.js xgrammarPrinted) and throws only Error("Aborted()") or a bare number.
 * @template T
 * @param {() => Promise<T>} compile
 * @returns {Promise<T>}
 */
async function withReason(compile) {
  xgrammarPrinted.length = 0;
  try {
    return await compile();
  } catch (err) {
    const fatal = xgrammarPrinted.find((line) => line.startsWith("[FATAL]"));
    const reason = fatal?.replace(/^\[FATAL\] \S+:\d+: (Check failed: \(.*?\) is false: )?/, "");
    throw new Error(reason ?? (typeof err === "number" ? "xgrammar refused it" : errorText(err)), { cause: err });
  }
}

export class Grammars {
  /**
   * Compiles the grammars of one model's requests; the tokenizer's facts are read on the first use.
   * @param {Record<string, any>} tokenizerJson  the model's tokenizer.json
   * @param {number} vocabSize  the logits' length (may exceed the tokenizer's tokens)
   * @param {Iterable<number>} stopTokenIds
   */
  constructor(tokenizerJson, vocabSize, stopTokenIds) {
    this.tokenizerJson = tokenizerJson;
    this.vocabSize = vocabSize;
    this.stopTokenIds = [...stopTokenIds].sort((a, b) => a - b);
    /** @type {Promise<any> | null} */ this.compilerPromise = null;
  }

  /** @returns {Promise<any>} xgrammar's GrammarCompiler for this tokenizer (made once) */
  compiler() {
    this.compilerPromise ??= (async () => {
      const xgr = await loadXgrammar();
      const { vocab, vocabType, prependSpace } = tokenizerFacts(this.tokenizerJson);
      const size = Math.max(this.vocabSize, vocab.length);
      const stops = this.stopTokenIds.length > 0 ? this.stopTokenIds : undefined;
      const info = await xgr.TokenizerInfo.createTokenizerInfo(vocab, vocabType, prependSpace, size, stops);
      return xgr.GrammarCompiler.createGrammarCompiler(info);
    })();
    return this.compilerPromise;
  }

  /**
   * `{type: "json_object"}` (any object) or `{type: "json_schema", schema}`; a schema xgrammar cannot take
   * is an InvalidRequestError on response_format, as the REST API's 400.
   * @param {{type: string, schema?: Record<string, any> | null}} format
   * @returns {Promise<Constraint>}
   */
  async responseFormat(format) {
    const compiler = await this.compiler();
    const strict = format.schema != null;
    const schema = strict ? jsonSafe(format.schema) : { type: "object" };
    try {
      // One line with ", " and ": " between items (indent -1), as the Python engine's any_whitespace=False.
      const text = JSON.stringify(schema);
      return new Constraint(await withReason(() => compiler.compileJSONSchema(text, false, -1, undefined, strict)));
    } catch (err) {
      throw new InvalidRequestError(
        `response_format.json_schema.schema is not a JSON Schema this engine can follow: ${errorText(err)}`,
        { param: "response_format", cause: err },
      );
    }
  }

  /**
   * The calls a request's tools allow (see toolStructuralTag); parameters xgrammar cannot take are an
   * InvalidRequestError on tools.
   * @param {ToolGrammar} spec
   * @returns {Promise<Constraint>}
   */
  async toolCalls(spec) {
    const compiler = await this.compiler();
    try {
      const tag = JSON.stringify(toolStructuralTag(spec));
      return new Constraint(await withReason(() => compiler.compileStructuralTag(tag)));
    } catch (err) {
      throw new InvalidRequestError(
        `the tools' parameters are not JSON Schemas this engine can follow: ${errorText(err)}`,
        { param: "tools", cause: err },
      );
    }
  }
}

/**
 * What a chat request's output must follow: its response_format, or the calls of its tools in the model's
 * format (`toolFormat`: null when it may call none); null when nothing.
 * @param {Grammars} grammars
 * @param {import("./openai.js").ChatParams} params
 * @param {import("./tool_calls.js").ToolCallFormat | null} toolFormat
 * @returns {Promise<Constraint | null>}
 */
export function requestConstraint(grammars, params, toolFormat) {
  if (params.response_format !== null) return grammars.responseFormat(params.response_format);
  if (toolFormat === null) return Promise.resolve(null);
  return grammars.toolCalls({
    structuralTag: toolFormat.structuralTag,
    tools: params.tools,
    choice: params.tool_choice,
    name: params.tool_name,
    parallel: params.parallel_tool_calls,
  });
}

/** A compiled grammar; `matcher()` starts one choice's walk through it. */
export class Constraint {
  /** @param {any} compiled  xgrammar's CompiledGrammar */
  constructor(compiled) {
    this.compiled = compiled;
  }

  /** @returns {Promise<Matcher>} */
  async matcher() {
    const xgr = await loadXgrammar();
    return new Matcher(await xgr.GrammarMatcher.createGrammarMatcher(this.compiled));
  }

  dispose() {
    this.compiled.dispose();
  }
}

/** One choice's place in its grammar: the bitmask of the next token, then `accept` the token chosen. */
export class Matcher {
  /** @param {any} matcher  xgrammar's GrammarMatcher */
  constructor(matcher) {
    this.matcher = matcher;
  }

  /** @returns {Promise<Int32Array>} bit `t % 32` of word `t >> 5` set when token t may come next */
  bitmask() {
    return this.matcher.getNextTokenBitmask();
  }

  /** @param {number} token */
  accept(token) {
    // Masking lets no other token through; one that gets here is a bug to hear of, not to hide.
    if (!this.matcher.acceptToken(token)) throw new Error(`token ${token} was sampled against the grammar`);
  }

  get terminated() {
    return Boolean(this.matcher.isTerminated());
  }

  dispose() {
    this.matcher.dispose();
  }
}

/**
 * The CPU form of apply_bitmask_inplace: tokens the bitmask forbids get float32's lowest value.
 * @param {Float32Array} logits
 * @param {Int32Array} bitmask
 */
export function maskLogits(logits, bitmask) {
  for (let t = 0; t < logits.length; t++) {
    if (((bitmask[t >> 5] >>> (t & 31)) & 1) === 0) logits[t] = LOWEST;
  }
}
