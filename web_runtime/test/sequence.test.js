import { test } from "node:test";
import assert from "node:assert/strict";
import { HistoryPipeline } from "./helpers.js";
import { KvSequence } from "../src/sequence.js";

/** The logits a freshly emptied cache gives after `ids`. */
async function cold(ids) {
  return new HistoryPipeline().prefill(ids);
}

test("a prompt that extends the cache prefills only its new tokens, with the logits of a cold prefill", async () => {
  const pipeline = new HistoryPipeline();
  const seq = new KvSequence(pipeline);
  assert.deepEqual((await seq.prefill([1, 2, 3], null)).cached, 0);
  await seq.decode(4, null);
  const next = await seq.prefill([1, 2, 3, 4, 5, 6], null);
  assert.equal(next.cached, 4);
  assert.equal(next.prefilled, 2);
  assert.deepEqual(pipeline.prefilled, [3, 2]);
  assert.deepEqual(pipeline.pops, []);
  assert.deepEqual(next.out, await cold([1, 2, 3, 4, 5, 6]));
  assert.deepEqual(seq.tokens, [1, 2, 3, 4, 5, 6]);
});

test("a prompt that leaves the cache's path pops back to the common prefix", async () => {
  const pipeline = new HistoryPipeline();
  const seq = new KvSequence(pipeline);
  await seq.prefill([1, 2, 3, 4, 5], null);
  const next = await seq.prefill([1, 2, 9], null);
  assert.deepEqual([next.cached, next.prefilled], [2, 1]);
  assert.deepEqual(pipeline.pops, [3]);
  assert.deepEqual(pipeline.fed, [1, 2, 9]);
  assert.deepEqual(next.out, await cold([1, 2, 9]));
});

test("the same prompt again runs its last token (the logits come from it); a shorter one pops", async () => {
  const pipeline = new HistoryPipeline();
  const seq = new KvSequence(pipeline);
  await seq.prefill([1, 2, 3], null);
  const again = await seq.prefill([1, 2, 3], null);
  assert.deepEqual([again.cached, again.prefilled], [2, 1]);
  assert.deepEqual(again.out, await cold([1, 2, 3]));
  const shorter = await seq.prefill([1, 2], null);
  assert.deepEqual([shorter.cached, shorter.prefilled], [1, 1]);
  assert.deepEqual(pipeline.fed, [1, 2]);
});

test("nothing in common, or an unknown cache, empties it first", async () => {
  const pipeline = new HistoryPipeline();
  const seq = new KvSequence(pipeline);
  await seq.prefill([1, 2, 3], null);
  assert.equal(pipeline.resets, 1); // the cache of a new sequence is unknown
  assert.equal((await seq.prefill([7, 2, 3], null)).cached, 0);
  assert.equal(pipeline.resets, 2);
  seq.forget(); // e.g. scoring ran the pipeline
  assert.equal((await seq.prefill([7, 2, 3, 4], null)).cached, 0);
  assert.equal(pipeline.resets, 3);
  assert.deepEqual(pipeline.fed, [7, 2, 3, 4]);
});

test("without popN only an exact extension is reused", async () => {
  const pipeline = new HistoryPipeline({ popN: false });
  const seq = new KvSequence(pipeline);
  await seq.prefill([1, 2, 3], null);
  assert.equal((await seq.prefill([1, 2, 3, 4], null)).cached, 3);
  const diverged = await seq.prefill([1, 2, 5], null);
  assert.equal(diverged.cached, 0);
  assert.deepEqual(pipeline.fed, [1, 2, 5]);
  assert.deepEqual(diverged.out, await cold([1, 2, 5]));
});

test("a call that fails leaves the cache unknown, so the next prompt starts from an empty one", async () => {
  const pipeline = new HistoryPipeline();
  const seq = new KvSequence(pipeline);
  await seq.prefill([1, 2, 3], null);
  const decode = pipeline.decode;
  pipeline.decode = async () => {
    throw new Error("device lost");
  };
  await assert.rejects(seq.decode(4, null), /device lost/);
  pipeline.decode = decode;
  assert.equal(seq.tokens, null);
  assert.equal((await seq.prefill([1, 2, 3, 4, 5], null)).cached, 0);
});

test("with a draw, prefill and decode choose the token on the GPU and track it like the others", async () => {
  const calls = [];
  const pipeline = new HistoryPipeline();
  pipeline.prefillToken = async (ids, draw) => (calls.push(["prefill", ids, draw]), 7);
  pipeline.decodeToken = async (id, draw) => (calls.push(["decode", id, draw]), 8);
  const seq = new KvSequence(pipeline);
  const draw = /** @type {any} */ ({ temperature: 0 });
  assert.equal((await seq.prefill([1, 2], draw)).out, 7);
  assert.equal(await seq.decode(7, draw), 8);
  assert.deepEqual(calls, [
    ["prefill", [1, 2], draw],
    ["decode", 7, draw],
  ]);
  assert.deepEqual(seq.tokens, [1, 2, 7]);
});
