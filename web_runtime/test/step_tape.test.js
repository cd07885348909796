import { test } from "node:test";
import assert from "node:assert/strict";
import { replay, TapeBook } from "../src/step_tape.js";
import { kinds, launch, setup, step, STORAGE } from "./fake_gpu.js";

/** A step recorded through the wrapped device. */
function recorded(s, pod) {
  s.gpu.record();
  step(s, pod);
  return s.gpu.stopRecording();
}

const submitted = (log) => kinds(log).filter((k) => !["write", "createBindGroup"].includes(k));

test("a replayed step sends the recorded commands again, rewriting only the uniforms that changed since", () => {
  const s = setup();
  step(s);
  const start = s.device.log.length;
  const tape = recorded(s, [1, 2]);
  const recordedLog = s.device.log.slice(start);
  step(s, [5, 6]); // another launch of the matmul's kernel left other bytes in its uniform
  const before = s.device.log.length;
  replay(s.gpu, tape);
  const replayed = s.device.log.slice(before);
  assert.deepEqual(submitted(replayed), submitted(recordedLog));
  assert.ok(submitted(replayed).includes("dispatch"));
  const writes = replayed.filter((e) => e[0] === "write");
  assert.deepEqual(writes, [["write", s.u2.id, 0, [1, 0, 0, 0, 2, 0, 0, 0]]]); // the norm's uniform still holds its bytes
  assert.equal(kinds(replayed).filter((k) => k === "createBindGroup").length, 0);
  assert.equal(s.gpu.counters.stepsReplayed, 1);
  assert.equal(s.gpu.counters.dispatches, 8); // 2 launches in each of 4 steps, the replay's counted too
});

test("a recording is trusted once a second step with its key does the same", () => {
  const s = setup();
  const book = new TapeBook();
  const first = recorded(s, [1, 2]);
  book.offer("pages=1", first);
  assert.equal(book.trusted("pages=1"), null);
  book.offer("pages=1", recorded(s, [1, 2]));
  assert.equal(book.trusted("pages=1"), first);
  assert.equal(book.trusted("pages=2"), null);
});

test("recordings whose scalar arguments differ are not trusted; bind groups over other scratch buffers may differ", () => {
  const s = setup();
  const book = new TapeBook();
  book.offer("k", recorded(s, [1, 2]));
  book.offer("k", recorded(s, [1, 3]));
  assert.equal(book.trusted("k"), null);
  assert.match(book.lastMismatch, /uniform \[1,0,0,0,2,0,0,0\] against \[1,0,0,0,3,0,0,0\]/);
  s.b = s.gpu.createBuffer({ size: 64, usage: STORAGE }); // the VM's pool lent another buffer this time
  book.offer("k", recorded(s, [1, 3]));
  assert.ok(book.trusted("k"));
});

test("a step that writes another buffer is never replayed; one during which a buffer died is dropped", () => {
  const s = setup();
  const book = new TapeBook();
  s.gpu.record();
  s.gpu.queue.writeBuffer(s.a, 0, new Int32Array([9]).buffer);
  step(s);
  book.offer("k", s.gpu.stopRecording());
  assert.equal(book.wants("k"), false);
  assert.deepEqual(book.summary().refused, ["a write into a buffer that is not a uniform"]);

  s.gpu.record();
  step(s);
  s.gpu.createBuffer({ size: 8, usage: STORAGE }).destroy();
  book.offer("j", s.gpu.stopRecording());
  book.offer("j", recorded(s, [1, 2]));
  assert.equal(book.trusted("j"), null); // the first was dropped, so this is the first kept
  assert.equal(book.wants("j"), true);
});

test("recordings that use a destroyed buffer are forgotten", () => {
  const s = setup();
  const book = new TapeBook();
  s.gpu.onForget = (id) => book.forgetBuffer(id);
  book.offer("k", recorded(s, [1, 2]));
  book.offer("k", recorded(s, [1, 2]));
  assert.ok(book.trusted("k"));
  s.b.destroy();
  assert.equal(book.trusted("k"), null);
});

test("recordings that keep disagreeing stop replaying altogether", () => {
  const s = setup();
  const book = new TapeBook({ maxMismatches: 3 });
  for (let i = 0; i < 4; i++) book.offer("k", recorded(s, [1, i]));
  assert.equal(book.enabled, false);
  assert.equal(book.wants("k"), false);
});

test("the least recently used recordings go first when the book is full", () => {
  const s = setup();
  const book = new TapeBook({ capacity: 2 });
  for (const key of ["a", "b", "a", "b"]) book.offer(key, recorded(s, [1, 2]));
  assert.ok(book.trusted("a")); // a is now the most recently used
  book.offer("c", recorded(s, [1, 2]));
  assert.ok(book.trusted("a"));
  assert.equal(book.trusted("b"), null);
});

test("a step that writes one uniform twice is never replayed (its writes could not all come first)", () => {
  const s = setup();
  const book = new TapeBook();
  s.gpu.record();
  step(s);
  s.gpu.queue.writeBuffer(s.u1, 0, new Int32Array([3, 3]).buffer);
  book.offer("k", s.gpu.stopRecording());
  assert.equal(book.wants("k"), false);
});

test("a replay submits every submitEvery launches, each submit one compute pass", () => {
  const s = setup();
  const tape = recorded(s, [1, 2]);
  s.gpu.submitEvery = 1;
  const before = s.device.log.length;
  replay(s.gpu, tape);
  assert.deepEqual(submitted(s.device.log.slice(before)), [
    ...["beginComputePass", "setPipeline", "setBindGroup", "dispatch", "end", "finish", "submit"],
    ...["beginComputePass", "setPipeline", "setBindGroup", "dispatch", "end", "finish", "submit"],
  ]);
});

test("an early submit of commands encoded before recording began makes the step unreplayable", () => {
  const s = setup();
  s.gpu.submitEvery = 1;
  const encoder = s.gpu.createCommandEncoder();
  launch(s.gpu, encoder, s.norm, s.layout, [s.a], s.u1, [7, 7]);
  s.gpu.record();
  launch(s.gpu, encoder, s.matmul, s.layout, [s.a, s.b], s.u2, [1, 2]); // submits the first launch first
  s.gpu.queue.submit([encoder.finish()]);
  assert.equal(s.gpu.stopRecording().refused, "a command buffer encoded before recording began");
});
