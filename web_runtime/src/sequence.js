// The KV cache's one sequence, seen as the tokens it holds. Generation feeds the pipeline through here, so
// a request whose prompt extends what the cache already holds (a chat's next turn: the previous prompt, the
// reply, the new message) prefills only its new tokens. Tokens past the common prefix are popped
// (pipeline.popN; bookkeeping only); without popN, or with nothing in common, the cache is emptied.
// Scoring, forwardTokens and the profile run the pipeline on their own, so the engine calls forget() for
// them: what the cache holds is then unknown and the next prompt starts from an empty cache.

/**
 * @typedef {object} Prefilled
 * @property {Float32Array | number} out  the logits after the prompt, or the token chosen on the GPU
 * @property {number} cached  prompt tokens whose KV was already in the cache
 * @property {number} prefilled  prompt tokens run through the model
 */

export class KvSequence {
  /** @param {import("./model.js").Pipeline} pipeline */
  constructor(pipeline) {
    this.pipeline = pipeline;
    /** @type {number[] | null} the tokens in the KV cache, in order; null when unknown */
    this.tokens = null;
    /** @type {{tokens: number[] | null, count: number} | null} what the cache held before decodeChosen steps
     * whose tokens are not settled yet, and how many there were */
    this.unsettled = null;
  }

  /** What the cache holds is no longer known (another user of the pipeline, or a failed call). */
  forget() {
    this.tokens = null;
    this.unsettled = null;
  }

  /** Empties the KV cache. */
  reset() {
    this.tokens = null;
    this.unsettled = null;
    this.pipeline.reset();
    this.tokens = [];
  }

  /**
   * Brings the cache to the longest prefix of `ids` it holds, leaving at least one token of `ids` to run
   * (the logits come from the last one), and runs the rest: prefill, or prefillToken when `draw` is given.
   * @param {number[]} ids
   * @param {import("./sampling.js").Draw | null} draw  choose the next token on the GPU with it
   * @returns {Promise<Prefilled>}
   */
  async prefill(ids, draw) {
    const cached = await this.keepPrefix(ids);
    const rest = ids.slice(cached);
    const pipeline = this.pipeline;
    const out = await this.feed(rest, () =>
      draw && pipeline.prefillToken ? pipeline.prefillToken(rest, draw) : pipeline.prefill(rest),
    );
    return { out, cached, prefilled: rest.length };
  }

  /**
   * Appends one token: decode, or decodeToken when `draw` is given.
   * @param {number} id
   * @param {import("./sampling.js").Draw | null} draw
   * @returns {Promise<Float32Array | number>}
   */
  decode(id, draw) {
    const pipeline = this.pipeline;
    return this.feed([id], () => (draw && pipeline.decodeToken ? pipeline.decodeToken(id, draw) : pipeline.decode(id)));
  }

  /**
   * Appends the token the last step chose on the GPU before it is read back (pipeline.decodeChosen), so the
   * step is queued while the caller reads that token. What the cache holds is unknown until `settle` names
   * the tokens these steps appended.
   * @param {import("./sampling.js").Draw} draw
   * @returns {Promise<number>} the token this step chooses
   */
  decodeChosen(draw) {
    if (this.unsettled === null) this.unsettled = { tokens: this.tokens, count: 0 };
    this.tokens = null;
    this.unsettled.count++;
    return /** @type {NonNullable<import("./model.js").Pipeline["decodeChosen"]>} */ (this.pipeline.decodeChosen)(draw);
  }

  /** Whether decodeChosen can run (the pipeline has it). */
  get canChain() {
    return typeof this.pipeline.decodeChosen === "function";
  }

  /**
   * After decodeChosen steps: `ids` are the tokens they appended, in order. Given as many as there were
   * steps, the cache is known again; otherwise it stays unknown.
   * @param {number[]} ids
   */
  settle(ids) {
    const unsettled = this.unsettled;
    this.unsettled = null;
    if (unsettled?.tokens && ids.length === unsettled.count) this.tokens = [...unsettled.tokens, ...ids];
  }

  /** Whether the cache can drop its last tokens (the pipeline has popN). */
  get canPop() {
    return typeof this.pipeline.popN === "function";
  }

  /**
   * Drops the last `n` tokens.
   * @param {number} n
   */
  async popN(n) {
    if (n <= 0) return;
    const tokens = this.tokens;
    this.tokens = null;
    await /** @type {NonNullable<import("./model.js").Pipeline["popN"]>} */ (this.pipeline.popN)(n);
    if (tokens) this.tokens = tokens.slice(0, tokens.length - n);
  }

  /**
   * Pops the cache back to its longest common prefix with `ids` (at most ids.length - 1 tokens), or empties
   * it when none is kept; returns the prefix's length.
   * @param {number[]} ids
   * @returns {Promise<number>}
   */
  async keepPrefix(ids) {
    const tokens = this.tokens ?? [];
    const limit = Math.min(tokens.length, ids.length - 1);
    let keep = 0;
    while (keep < limit && tokens[keep] === ids[keep]) keep++;
    if (this.tokens === null || keep === 0 || (keep < tokens.length && !this.canPop)) {
      this.reset();
      return 0;
    }
    await this.popN(tokens.length - keep);
    return keep;
  }

  /**
   * Runs a pipeline call that appends `ids`; until it succeeds, what the cache holds is unknown.
   * @template T
   * @param {number[]} ids
   * @param {() => Promise<T>} call
   * @returns {Promise<T>}
   */
  async feed(ids, call) {
    const tokens = this.tokens;
    this.tokens = null;
    const out = await call();
    if (tokens) {
      for (const id of ids) tokens.push(id);
      this.tokens = tokens;
    }
    return out;
  }
}
