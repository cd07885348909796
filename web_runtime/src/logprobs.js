// Per-token log-probabilities of one choice, attached to the text they produce. Token text does not reach
// the output one token at a time: the incremental decoder holds back unfinished UTF-8 characters, and the
// stop-string filter holds back text that may start a stop string, then drops the stop string itself.
// So each token gets the span of the output its text covers, and its entry is released with the delta that
// completes that span; tokens whose text never reaches the output get no entry.

import { tokenLogprobs } from "./sampler.js";

/**
 * @typedef {object} TopLogprob
 * @property {number} id
 * @property {string} token  the token decoded alone
 * @property {number} logprob
 */

/**
 * @typedef {object} TokenLogprob  one generated token of a choice
 * @property {number} id
 * @property {string} token  the token decoded alone (special tokens by name)
 * @property {number} logprob  natural log, over the whole vocabulary
 * @property {TopLogprob[]} top  the top_logprobs most likely tokens at that position, best first
 * @property {number} offset  where its text starts in the generated text (UTF-16 code units, as JS indexes
 *   strings); the tokens of one character split across byte tokens all start where the character does
 * @property {number} end  where its text ends (the end of the character, for such tokens)
 */

export class LogprobTracker {
  /**
   * @param {import("./tokenizer.js").TextTokenizer} tokenizer
   * @param {number} topK  top_logprobs
   */
  constructor(tokenizer, topK) {
    this.tokenizer = tokenizer;
    this.topK = topK;
    /** @type {Map<number, string>} */ this.texts = new Map();
    /** @type {TokenLogprob[]} tokens whose text the decoder still holds */ this.undecoded = [];
    /** @type {TokenLogprob[]} tokens with a span, not yet released */ this.placed = [];
    this.decoded = 0; // length of the text the decoder has released
    this.emitted = 0; // length of the text released to the caller (a prefix of the decoded text)
  }

  /**
   * Records a generated token, from the logits it was drawn from (after bias and penalties).
   * @param {ArrayLike<number>} logits
   * @param {number} token
   */
  add(logits, token) {
    const { logprob, top } = tokenLogprobs(logits, token, this.topK);
    this.undecoded.push({
      id: token,
      token: this.text(token),
      logprob,
      top: top.map((t) => ({ id: t.id, token: this.text(t.id), logprob: t.logprob })),
      offset: -1,
      end: -1,
    });
  }

  /**
   * The decoder released `length` characters: the text of the tokens it held until now.
   * @param {number} length
   */
  decodedText(length) {
    if (length === 0) return;
    this.place(this.decoded + length);
  }

  /**
   * `length` more characters reach the output: the entries of the tokens whose text is now all out.
   * @param {number} length
   * @returns {TokenLogprob[]}
   */
  release(length) {
    this.emitted += length;
    let n = 0;
    while (n < this.placed.length && this.placed[n].end <= this.emitted) n++;
    return this.placed.splice(0, n);
  }

  /**
   * The choice ended, with `length` more characters of output. After a stop string, a token whose text
   * begins before it still counts; the others are dropped. Otherwise every token left belongs to the
   * output (one whose text is empty, as a special token skipped in decoding, sits at the end).
   * @param {number} length
   * @param {boolean} stopped  whether a stop string ended the choice
   * @returns {TokenLogprob[]}
   */
  finish(length, stopped) {
    const out = this.release(length);
    if (stopped) {
      let n = 0;
      while (n < this.placed.length && this.placed[n].offset < this.emitted) n++;
      out.push(...this.placed.splice(0, n));
    } else {
      this.place(this.decoded);
      out.push(...this.placed);
    }
    this.placed = [];
    this.undecoded = [];
    return out;
  }

  /**
   * Gives the undecoded tokens the span from the decoded text's end so far to `end`.
   * @param {number} end
   */
  place(end) {
    for (const entry of this.undecoded) {
      entry.offset = this.decoded;
      entry.end = end;
    }
    this.placed.push(...this.undecoded);
    this.undecoded = [];
    this.decoded = end;
  }

  /**
   * @param {number} id
   * @returns {string}
   */
  text(id) {
    let text = this.texts.get(id);
    if (text === undefined) {
      text = this.tokenizer.decode([id], { skipSpecialTokens: false });
      this.texts.set(id, text);
    }
    return text;
  }
}
