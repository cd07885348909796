// Tokenizer glue over @huggingface/tokenizers (pure JS, reads the model's own tokenizer.json and
// tokenizer_config.json), plus incremental detokenization for streaming.

import { Tokenizer } from "./vendor.js";

/**
 * tokenizer_config.json writes special tokens either as strings or as AddedToken objects.
 * @param {unknown} value
 * @returns {string | null}
 */
export function specialTokenText(value) {
  if (typeof value === "string") return value;
  if (value && typeof value === "object" && typeof (/** @type {any} */ (value).content) === "string") {
    return /** @type {any} */ (value).content;
  }
  return null;
}

export class TextTokenizer {
  /**
   * @param {object | string} tokenizerJson  tokenizer.json (parsed or text)
   * @param {Record<string, any>} [tokenizerConfig]  tokenizer_config.json
   */
  constructor(tokenizerJson, tokenizerConfig = {}) {
    const json = typeof tokenizerJson === "string" ? JSON.parse(tokenizerJson) : tokenizerJson;
    this.config = tokenizerConfig;
    this.impl = new Tokenizer(json, normalizeConfig(tokenizerConfig));
    /** @type {string | null} */ this.bosToken = specialTokenText(tokenizerConfig.bos_token);
    /** @type {string | null} */ this.eosToken = specialTokenText(tokenizerConfig.eos_token);
  }

  /**
   * @param {string} text
   * @param {{addSpecialTokens?: boolean}} [options]  false for rendered chat prompts (the template
   *   already wrote BOS and role markers), true for raw completions (the tokenizer's post-processor adds BOS)
   * @returns {number[]}
   */
  encode(text, { addSpecialTokens = false } = {}) {
    return this.impl.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  /**
   * @param {ArrayLike<number>} ids
   * @param {{skipSpecialTokens?: boolean}} [options]
   * @returns {string}
   */
  decode(ids, { skipSpecialTokens = true } = {}) {
    if (ids.length === 0) return ""; // tokenizers.js refuses empty lists
    return this.impl.decode(Array.from(ids), { skip_special_tokens: skipSpecialTokens });
  }

  /**
   * @param {string} token
   * @returns {number | undefined}
   */
  tokenId(token) {
    return this.impl.token_to_id(token);
  }
}

/**
 * Tokenizers.js reads special tokens as strings; some configs store them as objects.
 * @param {Record<string, any>} config
 */
function normalizeConfig(config) {
  const out = { ...config };
  for (const key of ["bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"]) {
    if (key in out) {
      const text = specialTokenText(out[key]);
      if (text === null) delete out[key];
      else out[key] = text;
    }
  }
  return out;
}

/**
 * Turns a growing list of token ids into text deltas. Decoding ids one at a time loses information
 * (a leading-space marker, a multi-byte character split across byte-fallback tokens), so each step decodes
 * a short window that starts a few tokens back and emits only what is new and complete: text ending in
 * U+FFFD is an unfinished UTF-8 sequence and waits for the next token.
 */
export class IncrementalDecoder {
  /** @param {TextTokenizer} tokenizer */
  constructor(tokenizer) {
    this.tokenizer = tokenizer;
    /** @type {number[]} */ this.ids = [];
    this.prefixOffset = 0; // window start: tokens before it are fully emitted
    this.readOffset = 0; // tokens before it have had their text emitted
  }

  /**
   * @param {number} id
   * @returns {string} the new text (possibly empty)
   */
  push(id) {
    this.ids.push(id);
    const prefix = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const full = this.tokenizer.decode(this.ids.slice(this.prefixOffset));
    if (full.length > prefix.length && !full.endsWith("\uFFFD")) {
      this.prefixOffset = this.readOffset;
      this.readOffset = this.ids.length;
      return full.slice(prefix.length);
    }
    return "";
  }

  /** @returns {string} whatever is still held back (an unfinished character at the end of output) */
  flush() {
    const prefix = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const full = this.tokenizer.decode(this.ids.slice(this.prefixOffset));
    this.prefixOffset = this.readOffset = this.ids.length;
    return full.length > prefix.length ? full.slice(prefix.length) : "";
  }
}
