import { test } from "node:test";
import assert from "node:assert/strict";
import {
  createRng,
  sampleToken,
  argmax,
  applyPenalties,
  drawToken,
  tokenLogprobs,
  logSumExp,
  topIndices,
  choiceSeed,
} from "../src/sampler.js";

const logits = () => Float32Array.from([1.0, 3.0, 2.9, -1.0, 0.5, 2.5]);

test("temperature 0 is greedy (argmax, lowest index on ties)", () => {
  const rng = createRng(1);
  assert.equal(sampleToken(logits(), { temperature: 0, top_p: 1 }, rng), 1);
  assert.equal(argmax([2, 5, 5, 1]), 1);
});

test("tiny temperatures draw the argmax instead of NaN (5e-324 passes validation)", () => {
  for (const temperature of [5e-324, 1e-310, 1e-30]) {
    for (const seed of [1, 2, 3]) {
      assert.equal(sampleToken(logits(), { temperature, top_p: 1 }, createRng(seed)), 1);
      assert.equal(sampleToken(logits(), { temperature, top_p: 0.5 }, createRng(seed)), 1);
    }
  }
});

test("the same seed gives the same tokens; another seed gives others", () => {
  const draw = (seed) => {
    const rng = createRng(seed);
    return Array.from({ length: 40 }, () => sampleToken(logits(), { temperature: 1, top_p: 1 }, rng));
  };
  assert.deepEqual(draw(1234), draw(1234));
  assert.notDeepEqual(draw(1234), draw(4321));
});

test("the PRNG is uniform enough and stays in [0, 1)", () => {
  const rng = createRng(7);
  let sum = 0;
  for (let i = 0; i < 20000; i++) {
    const x = rng();
    assert.ok(x >= 0 && x < 1);
    sum += x;
  }
  assert.ok(Math.abs(sum / 20000 - 0.5) < 0.01);
});

test("sampling follows softmax(logits / T)", () => {
  const rng = createRng(99);
  const counts = new Array(6).fill(0);
  const n = 20000;
  for (let i = 0; i < n; i++) counts[sampleToken(logits(), { temperature: 1, top_p: 1 }, rng)]++;
  const l = logits();
  const z = Array.from(l).reduce((s, v) => s + Math.exp(v), 0);
  for (let i = 0; i < 6; i++) assert.ok(Math.abs(counts[i] / n - Math.exp(l[i]) / z) < 0.015, `token ${i}`);
});

test("top_p keeps the smallest set of likely tokens whose mass reaches top_p", () => {
  // probs ~ [.06, .37, .34, .01, .03, .19] at T=1: top_p 0.5 keeps {1, 2}; top_p 0.01 keeps {1}.
  const rng = createRng(5);
  const seen = new Set();
  for (let i = 0; i < 2000; i++) seen.add(sampleToken(logits(), { temperature: 1, top_p: 0.5 }, rng));
  assert.deepEqual([...seen].sort(), [1, 2]);
  for (let i = 0; i < 200; i++) assert.equal(sampleToken(logits(), { temperature: 1, top_p: 0.01 }, rng), 1);
});

test("logit_bias and presence/frequency penalties shift the choice", () => {
  const rng = createRng(3);
  assert.equal(sampleToken(logits(), { temperature: 0, top_p: 1, logit_bias: { 3: 100 } }, rng), 3);
  const counts = new Map([[1, 2]]);
  assert.equal(sampleToken(logits(), { temperature: 0, top_p: 1, frequency_penalty: 0.1 }, rng, counts), 2);
  assert.equal(
    sampleToken(
      logits(),
      { temperature: 0, top_p: 1, presence_penalty: 1 },
      rng,
      new Map([
        [1, 1],
        [2, 1],
      ]),
    ),
    5,
  );
});

test("masked (-Infinity) tokens are never drawn", () => {
  const rng = createRng(11);
  const l = Float32Array.from([0, -Infinity, 0]);
  for (let i = 0; i < 500; i++)
    assert.notEqual(sampleToken(Float32Array.from(l), { temperature: 1, top_p: 1 }, rng), 1);
});

/** log(softmax(logits)[i]) computed the long way, in float64. */
function directLogprob(l, i) {
  let z = 0;
  for (const v of l) z += Math.exp(v);
  return Math.log(Math.exp(l[i]) / z);
}

test("logprobs are the log-softmax over the whole vocabulary", () => {
  const rng = createRng(21);
  const l = Float32Array.from({ length: 1000 }, () => (rng() - 0.5) * 16);
  for (const token of [0, 17, 999, argmax(l)]) {
    const { logprob } = tokenLogprobs(l, token, 0);
    assert.ok(Math.abs(logprob - directLogprob(l, token)) < 1e-9, `token ${token}`);
  }
  const lse = logSumExp(l);
  const total = Array.from(l).reduce((s, v) => s + Math.exp(v - lse), 0);
  assert.ok(Math.abs(total - 1) < 1e-9);
  // Shifted far out of exp's range, the log-probabilities stay finite and the same.
  const shifted = l.map((v) => v + 5000);
  assert.ok(Math.abs(tokenLogprobs(shifted, 17, 0).logprob - tokenLogprobs(l, 17, 0).logprob) < 1e-3);
  assert.equal(tokenLogprobs(Float32Array.from([0, -Infinity]), 1, 0).logprob, -Infinity);
});

test("top logprobs are the k most likely tokens, best first, lower id first on ties", () => {
  const l = Float32Array.from([1, 5, 3, 5, -2, 4, NaN, 0]);
  assert.deepEqual(topIndices(l, 3), [1, 3, 5]);
  assert.deepEqual(topIndices(l, 0), []);
  assert.deepEqual(topIndices(l, 20), [1, 3, 5, 2, 0, 7, 4]);
  const { logprob, top } = tokenLogprobs(l.map((v) => (Number.isNaN(v) ? -Infinity : v)), 2, 2);
  assert.deepEqual(
    top.map((t) => t.id),
    [1, 3],
  );
  assert.ok(top[0].logprob >= top[1].logprob && top[1].logprob > logprob);
  const rng = createRng(2);
  const big = Float32Array.from({ length: 5000 }, () => rng() * 10);
  const sorted = Array.from(big.keys()).sort((a, b) => big[b] - big[a] || a - b);
  assert.deepEqual(topIndices(big, 20), sorted.slice(0, 20));
});

test("logprobs see logit_bias and penalties (applied first), never the temperature", () => {
  const params = { temperature: 0, top_p: 1, logit_bias: { 3: 2.5 }, presence_penalty: 0.5, frequency_penalty: 0.25 };
  const counts = new Map([[1, 2]]);
  const l = logits();
  applyPenalties(l, params, counts);
  const expected = Array.from(logits());
  expected[3] += 2.5;
  expected[1] -= 0.5 + 0.25 * 2;
  for (let i = 0; i < 6; i++) assert.ok(Math.abs(tokenLogprobs(l, i, 0).logprob - directLogprob(expected, i)) < 1e-6);
  // Greedy picks the token with the highest logprob.
  const greedy = drawToken(l, params, createRng(1));
  assert.equal(greedy, tokenLogprobs(l, greedy, 1).top[0].id);
  assert.equal(greedy, 2);
  // The draw does not modify the logits, whatever the temperature: logprobs read before or after agree.
  const before = tokenLogprobs(l, 0, 6);
  drawToken(l, { temperature: 1.7, top_p: 0.5 }, createRng(4));
  assert.deepEqual(tokenLogprobs(l, 0, 6), before);
});

test("choice seeds: choice 0 keeps the request's seed; the others get distinct, non-overlapping streams", () => {
  assert.equal(choiceSeed(42, 0), 42);
  assert.equal(choiceSeed(-5, 0), -5);
  const seeds = Array.from({ length: 16 }, (_, i) => choiceSeed(42, i));
  assert.equal(new Set(seeds).size, 16);
  assert.deepEqual(seeds, Array.from({ length: 16 }, (_, i) => choiceSeed(42, i)));
  assert.notEqual(choiceSeed(42, 1), choiceSeed(43, 1));
  assert.ok(seeds.slice(1).every((x) => Number.isInteger(x) && x >= 0 && x < 2 ** 32));
  // No stream is another's shifted by a few draws (mulberry32 streams of seeds s and s + k * step are).
  const head = (seed) => Array.from({ length: 64 }, createRng(seed));
  const streams = seeds.map(head);
  for (let i = 1; i < 16; i++) {
    for (let j = 0; j < 16; j++) if (i !== j) assert.ok(!streams[j].includes(streams[i][0]), `${i} in ${j}`);
  }
});
