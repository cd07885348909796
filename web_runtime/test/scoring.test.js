import { test } from "node:test";
import assert from "node:assert/strict";
import { addRows, createScores, logSumExp, topKInto } from "../src/scoring.js";

test("topKInto keeps the k largest, best first, lower id first on ties, skipping NaN", () => {
  const row = Float32Array.from([0.5, 3, NaN, -1, 3, 7, 2]);
  const ids = new Int32Array(3);
  const values = new Float32Array(3);
  topKInto(row, 3, ids, values, 0);
  assert.deepEqual([...ids], [5, 1, 4]);
  assert.deepEqual([...values], [7, 3, 3]);
});

test("logSumExp is stable for large logits and NaN when the row holds one", () => {
  const row = Float32Array.from([1000, 1000]);
  assert.ok(Math.abs(logSumExp(row, 1000) - (1000 + Math.log(2))) < 1e-9);
  assert.ok(Number.isNaN(logSumExp(Float32Array.from([1, NaN]), 1)));
});

test("addRows fills summaries chunk by chunk, and full logits when asked", () => {
  const vocab = 4;
  const tokens = [0, 2, 3];
  const rows = [
    [0, 1, 2, 3],
    [5, 0, 0, 0],
    [1, 1, 4, 1],
  ];
  const scores = createScores(3, vocab, { topK: 2, fullLogits: true });
  addRows(scores, Float32Array.from(rows.slice(0, 2).flat()), 0, 2, tokens);
  addRows(scores, Float32Array.from(rows[2]), 2, 1, tokens);
  assert.deepEqual([...scores.topIds], [3, 2, 0, 1, 2, 0]);
  assert.deepEqual([...scores.logits], rows.flat());
  const lse0 = Math.log(1 + Math.E + Math.E ** 2 + Math.E ** 3);
  assert.ok(Math.abs(scores.logsumexp[0] - lse0) < 1e-5);
  assert.ok(Math.abs(scores.nextLogprobs[0] - (2 - lse0)) < 1e-5); // token 1 of the sequence is id 2
  assert.ok(Number.isNaN(scores.nextLogprobs[2]));
  assert.throws(() => addRows(scores, new Float32Array(3), 0, 1, tokens), /expected 1 x 4/);
});

test("topK is capped by the vocabulary; logits are omitted unless asked for", () => {
  const scores = createScores(2, 3, { topK: 10, fullLogits: false });
  assert.equal(scores.topK, 3);
  assert.equal(scores.logits, null);
});
