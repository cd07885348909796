import { test } from "node:test";
import assert from "node:assert/strict";
import { createRng, sampleToken, argmax } from "../sampler.js";

const logits = () => Float32Array.from([1.0, 3.0, 2.9, -1.0, 0.5, 2.5]);

test("temperature 0 is greedy (argmax, lowest index on ties)", () => {
  const rng = createRng(1);
  assert.equal(sampleToken(logits(), { temperature: 0, top_p: 1 }, rng), 1);
  assert.equal(argmax([2, 5, 5, 1]), 1);
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
