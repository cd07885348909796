import { test } from "node:test";
import assert from "node:assert/strict";
import { DeviceShim } from "../src/gpu_device.js";
import { fakeDevice, kinds, launch, setup, step, STORAGE, UNIFORM } from "./fake_gpu.js";

test("launches of one encoder share a compute pass, closed before anything else is encoded", () => {
  const s = setup();
  step(s);
  assert.deepEqual(
    kinds(s.device.log).filter((k) => k !== "write" && k !== "createBindGroup"),
    [
      "beginComputePass",
      "setPipeline",
      "setBindGroup",
      "dispatch",
      "setPipeline",
      "setBindGroup",
      "dispatch",
      "end",
      "finish",
      "submit",
    ],
  );
  const encoder = s.gpu.createCommandEncoder();
  launch(s.gpu, encoder, s.norm, s.layout, [s.a], s.u1, [7, 7]);
  encoder.copyBufferToBuffer(s.a, 0, s.b, 0, 4);
  const tail = kinds(s.device.log).slice(-3);
  assert.deepEqual(tail, ["dispatch", "end", "copy"]);
  assert.equal(s.gpu.counters.dispatches, 3);
  assert.deepEqual(
    [...s.gpu.counters.kernels],
    [
      ["norm_kernel", 2],
      ["matmul_kernel", 1],
    ],
  );
});

test("bind groups and unchanged uniform writes are reused across steps; changed bytes are written", () => {
  const s = setup();
  step(s);
  const first = s.device.log.length;
  step(s);
  const second = s.device.log.slice(first);
  assert.equal(kinds(second).filter((k) => k === "createBindGroup").length, 0);
  assert.equal(kinds(second).filter((k) => k === "write").length, 0);
  step(s, [1, 3]); // the matmul's scalar arguments changed: its uniform is written, the norm's is not
  const writes = s.device.log.filter((e) => e[0] === "write");
  assert.equal(writes.length, 3);
  assert.equal(writes.at(-1)[1], s.u2.id);
  assert.deepEqual(s.gpu.counters.bindGroupsMade, 2);
  assert.deepEqual(s.gpu.counters.uniformWritesSkipped, 3);
});

test("a destroyed buffer's bind groups are dropped, so a new buffer gets its own", () => {
  const s = setup();
  step(s);
  s.b.destroy();
  s.b = s.gpu.createBuffer({ size: 64, usage: STORAGE });
  step(s);
  assert.equal(s.gpu.counters.bindGroupsMade, 3); // the norm's is reused, the matmul's made again
  assert.equal(s.gpu.bindGroups.size, 2);
  assert.ok(kinds(s.device.log).includes("destroy"));
});

test("without reuse every launch gets its own pass, bind group and uniform write, as tvmjs asks", () => {
  const s = setup(false);
  step(s);
  step(s);
  const log = kinds(s.device.log);
  assert.equal(log.filter((k) => k === "beginComputePass").length, 4);
  assert.equal(log.filter((k) => k === "createBindGroup").length, 4);
  assert.equal(log.filter((k) => k === "write").length, 4);
});

test("a pass timer gets one timestamped pass per launch and resolves before the encoder finishes", () => {
  const s = setup();
  const named = [];
  let resolved = 0;
  s.gpu.timer = {
    passDescriptor: () => ({ timestampWrites: {} }),
    named: (name) => named.push(name),
    beforeFinish: () => resolved++,
  };
  step(s);
  const log = kinds(s.device.log);
  assert.equal(s.device.log.filter((e) => e[0] === "beginComputePass" && e[1] === "timed").length, 2);
  assert.equal(log.filter((k) => k === "end").length, 2);
  assert.deepEqual(named, ["norm_kernel", "matmul_kernel"]);
  assert.equal(resolved, 1);
});

test("everything else reaches the real device unchanged", () => {
  const s = setup();
  assert.equal(s.gpu.limits.maxBufferSize, 1 << 30);
  assert.ok(s.gpu.features instanceof Set);
});

test("every submitEvery launches the commands so far are submitted, in order; tvmjs's finish gets the rest", () => {
  const device = fakeDevice();
  const gpu = new DeviceShim(device, { submitEvery: 2 });
  const layout = { layout: 1 };
  const a = gpu.createBuffer({ size: 64, usage: STORAGE });
  const u = [1, 2, 3, 4, 5].map(() => gpu.createBuffer({ size: 8, usage: UNIFORM }));
  const kernel = gpu.createComputePipeline({ compute: { entryPoint: "k" } });
  const encoder = gpu.createCommandEncoder();
  for (let i = 0; i < 5; i++) launch(gpu, encoder, kernel, layout, [a], u[i], [i, i]);
  gpu.queue.submit([encoder.finish()]);
  const order = kinds(device.log).filter((k) => ["dispatch", "end", "finish", "submit"].includes(k));
  assert.deepEqual(order, [
    ...["dispatch", "dispatch", "end", "finish", "submit"],
    ...["dispatch", "dispatch", "end", "finish", "submit"],
    ...["dispatch", "end", "finish", "submit"],
  ]);
  assert.equal(gpu.counters.submits, 3);
  assert.equal(gpu.counters.dispatches, 5);
});
