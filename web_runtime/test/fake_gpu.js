// A fake GPUDevice that logs what reaches it, and the launches tvmjs makes on it: for the tests of the
// wrapped device (gpu_device.js) and of replayed steps (step_tape.js).
import { DeviceShim } from "../src/gpu_device.js";

export const UNIFORM = 0x40;
export const STORAGE = 0x80;

/** A device that records what reaches it (the calls tvmjs makes, as the real WebGPU would get them). */
export function fakeDevice() {
  const log = [];
  let n = 0;
  const pass = (desc) => ({
    setPipeline: (p) => log.push(["setPipeline", p.name]),
    setBindGroup: (i, g) => log.push(["setBindGroup", g.id]),
    dispatchWorkgroups: (x) => log.push(["dispatch", x]),
    end: () => log.push(["end"]),
    desc,
  });
  const device = {
    log,
    limits: { maxBufferSize: 1 << 30 },
    features: new Set(),
    queue: {
      writeBuffer: (buffer, offset, data) => log.push(["write", buffer.id, offset, Array.from(new Uint8Array(data))]),
      submit: () => log.push(["submit"]),
      onSubmittedWorkDone: async () => {},
    },
    createBuffer: (d) => ({ id: `buf${++n}`, usage: d.usage, destroy: () => log.push(["destroy"]) }),
    createBindGroup: (d) => {
      log.push(["createBindGroup"]);
      return { id: `bg${++n}`, d };
    },
    createComputePipeline: (d) => ({ name: d.compute.entryPoint }),
    createCommandEncoder: () => ({
      beginComputePass: (desc) => {
        log.push(["beginComputePass", desc?.timestampWrites ? "timed" : ""]);
        return pass(desc);
      },
      copyBufferToBuffer: () => log.push(["copy"]),
      finish: () => {
        log.push(["finish"]);
        return { commands: true };
      },
    }),
  };
  return device;
}

/** What tvmjs does for one kernel launch: a pass, the pipeline, a bind group, its uniform, a dispatch. */
export function launch(gpu, encoder, pipeline, layout, buffers, uniform, pod) {
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  gpu.queue.writeBuffer(uniform, 0, new Int32Array(pod).buffer);
  const entries = [...buffers, uniform].map((buffer, binding) => ({ binding, resource: { buffer } }));
  pass.setBindGroup(0, gpu.createBindGroup({ layout, entries }));
  pass.dispatchWorkgroups(4);
  pass.end();
}

export function setup(reuse = true) {
  const device = fakeDevice();
  const gpu = new DeviceShim(device, { reuse });
  const layout = { layout: 1 };
  const a = gpu.createBuffer({ size: 64, usage: STORAGE });
  const b = gpu.createBuffer({ size: 64, usage: STORAGE });
  const u1 = gpu.createBuffer({ size: 8, usage: UNIFORM });
  const u2 = gpu.createBuffer({ size: 8, usage: UNIFORM });
  const matmul = gpu.createComputePipeline({ compute: { entryPoint: "matmul_kernel" } });
  const norm = gpu.createComputePipeline({ compute: { entryPoint: "norm_kernel" } });
  return { device, gpu, layout, a, b, u1, u2, matmul, norm };
}

/** One "step": two launches in one encoder, then submit. */
export function step({ gpu, layout, a, b, u1, u2, matmul, norm }, pod = [1, 2]) {
  const encoder = gpu.createCommandEncoder();
  launch(gpu, encoder, norm, layout, [a], u1, [7, 7]);
  launch(gpu, encoder, matmul, layout, [a, b], u2, pod);
  gpu.queue.submit([encoder.finish()]);
}

/** @param {any[][]} log */
export const kinds = (log) => log.map((e) => e[0]);
