// Teacher-forced scoring: what `engine.scoreTokens` returns for every position of a token sequence. Rows of
// logits are summarised as they arrive from the GPU (chunk by chunk), so the full [positions, vocab] logits
// are kept only when the caller asks for them. forwardLogits is the same check on the generation path.

/**
 * @typedef {object} TokenScores  the model's prediction after each of `positions` tokens
 * @property {number} positions  how many tokens were scored; row i is the prediction for token i + 1
 * @property {number} vocabSize
 * @property {number} topK  candidates per position in topIds / topLogits
 * @property {Int32Array} topIds  [positions * topK], best first (ties: lower id first, as argmax)
 * @property {Float32Array} topLogits  [positions * topK]
 * @property {Float32Array} logsumexp  [positions]: log of the softmax denominator, so a token's
 *   log-probability is `logit - logsumexp[i]`
 * @property {Float32Array} nextLogprobs  [positions]: log-probability of the given token i + 1 at row i
 *   (their sum is the sequence's log-likelihood); NaN in the last row
 * @property {Float32Array | null} logits  [positions * vocabSize] raw logits when asked for (fullLogits)
 */

/**
 * Empty scores for `positions` rows.
 * @param {number} positions
 * @param {number} vocabSize
 * @param {{topK: number, fullLogits: boolean}} options
 * @returns {TokenScores}
 */
export function createScores(positions, vocabSize, { topK, fullLogits }) {
  const k = Math.min(topK, vocabSize);
  return {
    positions,
    vocabSize,
    topK: k,
    topIds: new Int32Array(positions * k),
    topLogits: new Float32Array(positions * k),
    logsumexp: new Float32Array(positions),
    nextLogprobs: new Float32Array(positions).fill(NaN),
    logits: fullLogits ? new Float32Array(positions * vocabSize) : null,
  };
}

/**
 * Fills rows `start .. start + count` of `scores` from `logits` (count rows of vocabSize floats).
 * @param {TokenScores} scores
 * @param {Float32Array} logits
 * @param {number} start
 * @param {number} count
 * @param {ArrayLike<number>} tokenIds  the scored sequence (for nextLogprobs)
 */
export function addRows(scores, logits, start, count, tokenIds) {
  const { vocabSize: vocab, topK: k } = scores;
  if (logits.length !== count * vocab) {
    throw new Error(`expected ${count} x ${vocab} logits, got ${logits.length} values`);
  }
  if (scores.logits) scores.logits.set(logits, start * vocab);
  for (let r = 0; r < count; r++) {
    const i = start + r;
    const row = logits.subarray(r * vocab, (r + 1) * vocab);
    topKInto(row, k, scores.topIds, scores.topLogits, i * k);
    const lse = logSumExp(row, scores.topLogits[i * k]);
    scores.logsumexp[i] = lse;
    if (i + 1 < tokenIds.length) scores.nextLogprobs[i] = row[tokenIds[i + 1]] - lse;
  }
}

/**
 * The k largest entries of `row`, best first, written at `offset` of `ids` / `values`. An insertion into a
 * short sorted list: one pass over the row, cheap for the small k this is used with.
 * @param {Float32Array} row
 * @param {number} k
 * @param {Int32Array} ids
 * @param {Float32Array} values
 * @param {number} offset
 */
export function topKInto(row, k, ids, values, offset) {
  let filled = 0;
  for (let v = 0; v < row.length; v++) {
    const x = row[v];
    if (filled === k && !(x > values[offset + k - 1])) continue; // also skips NaN
    if (Number.isNaN(x)) continue;
    let j = filled < k ? filled++ : k - 1;
    while (j > 0 && x > values[offset + j - 1]) {
      values[offset + j] = values[offset + j - 1];
      ids[offset + j] = ids[offset + j - 1];
      j--;
    }
    values[offset + j] = x;
    ids[offset + j] = v;
  }
}

/**
 * log(sum(exp(row))), shifted by the row's maximum for stability; NaN if the row holds a NaN.
 * @param {Float32Array} row
 * @param {number} max
 */
export function logSumExp(row, max) {
  if (!Number.isFinite(max)) return NaN;
  let sum = 0;
  for (let v = 0; v < row.length; v++) sum += Math.exp(row[v] - max);
  return max + Math.log(sum);
}

/** Most candidates per position scoreTokens returns. */
export const MAX_TOP_K = 64;

/**
 * The logits after `promptIds` (prefilled from an empty KV cache) and after each of `decodeIds` (decoded
 * one by one): the generation path, for checking a build against a reference.
 * @param {import("./model.js").Pipeline} pipeline
 * @param {number[]} promptIds
 * @param {number[]} decodeIds
 * @returns {Promise<Float32Array[]>}
 */
export async function forwardLogits(pipeline, promptIds, decodeIds) {
  pipeline.reset();
  const out = [await pipeline.prefill(promptIds)];
  for (const id of decodeIds) out.push(await pipeline.decode(id));
  return out;
}

/**
 * Scores every position of `tokenIds` with the pipeline's batch_verify, from an empty KV cache, and empties
 * it again after (the sequence is not a conversation to continue).
 * @param {import("./model.js").Pipeline} pipeline  one with `verify` (the engine checks)
 * @param {number[]} tokenIds
 * @param {{topK: number, fullLogits: boolean}} options
 * @returns {Promise<TokenScores>}
 */
export async function scoreSequence(pipeline, tokenIds, options) {
  pipeline.reset();
  /** @type {TokenScores | null} */
  let scores = null;
  const verify = /** @type {NonNullable<import("./model.js").Pipeline["verify"]>} */ (pipeline.verify);
  await verify.call(pipeline, tokenIds, (logits, start, count) => {
    scores ??= createScores(tokenIds.length, logits.length / count, options);
    addRows(scores, logits, start, count, tokenIds);
  });
  pipeline.reset();
  return /** @type {TokenScores} */ (scores);
}
