// The GPUDevice that tvmjs draws on, wrapped: tvmjs (0.27) encodes every kernel launch as its own compute
// pass with a new bind group and a queue write of its scalar arguments. A decode step launches the same few
// hundred kernels on the same buffers every time, so here
//   - bind groups are made once per (layout, buffers) and reused across steps (dropped when a buffer dies);
//   - a uniform write whose bytes equal what that buffer already holds is skipped (tvmjs gives each launch
//     position in a batch its own uniform buffer, so from the second step on most writes repeat);
//   - consecutive launches share one compute pass (WebGPU orders dispatches within a pass as it does passes,
//     each dispatch being its own synchronization scope), closed when anything else is encoded;
//   - every `submitEvery` launches the commands so far are submitted (tvmjs submits once, when it syncs), so
//     the GPU process and the GPU start on the first layers while the later ones are still being encoded.
// It also counts what it sees (dispatches by kernel, passes, submits, ...) for the profile, lets the
// profiler (profile.js) put timestamp queries around each launch, and records what a step sends to the queue
// so that the step can be replayed without the VM (step_tape.js). Our own code around tvmjs: tvmjs is used
// unchanged, it only receives this object instead of the device.

import { BEGIN, CALL, DISPATCH, END, GROUP, PIPELINE, sameBytes, Tape } from "./step_tape.js";

/**
 * @typedef {object} DeviceCounters  what the wrapped device did since the last reset
 * @property {number} dispatches
 * @property {number} passes  compute passes actually begun
 * @property {number} submits
 * @property {number} bindGroupsMade
 * @property {number} bindGroupsReused
 * @property {number} uniformWrites  queue writes into uniform buffers that went through
 * @property {number} uniformWritesSkipped  ... and those skipped as unchanged
 * @property {number} otherWrites  queue writes into other buffers (inputs, KV-cache bookkeeping)
 * @property {number} writeBytes
 * @property {number} stepsRecorded  VM steps recorded for replay
 * @property {number} stepsReplayed  steps replayed from a recording
 * @property {Map<string, number>} kernels  dispatches by kernel name
 */

/**
 * Hooks the profiler installs to time each compute pass (see profile.js).
 * @typedef {object} PassTimer
 * @property {(encoder: any) => any} passDescriptor  a descriptor with timestampWrites for the next pass, or
 *   undefined when no query slot is left
 * @property {(name: string) => void} named  the kernel the last pass dispatched
 * @property {(encoder: any) => void} beforeFinish  resolve the encoder's queries
 */

/** @returns {DeviceCounters} */
export function emptyCounters() {
  return {
    dispatches: 0,
    passes: 0,
    submits: 0,
    bindGroupsMade: 0,
    bindGroupsReused: 0,
    uniformWrites: 0,
    uniformWritesSkipped: 0,
    otherWrites: 0,
    writeBytes: 0,
    stepsRecorded: 0,
    stepsReplayed: 0,
    kernels: new Map(),
  };
}

// GPUBufferUsage flags (constants, so that node tests need no WebGPU globals)
const MAP_READ = 0x01;
const UNIFORM = 0x40;
/** Launches per early submit: a decode step of a 30-layer model is ~250 launches, so the GPU starts after ~1/8. */
export const SUBMIT_EVERY = 32;

export class DeviceShim {
  /**
   * @param {any} device  the real GPUDevice
   * @param {{reuse?: boolean, submitEvery?: number}} [options]  reuse: false encodes as tvmjs asks (for
   *   profiling the difference); submitEvery: launches per early submit, 0 for none
   */
  constructor(device, { reuse = true, submitEvery = SUBMIT_EVERY } = {}) {
    this.device = device;
    this.reuse = reuse;
    this.submitEvery = submitEvery;
    this.counters = emptyCounters();
    /** @type {PassTimer | null} */ this.timer = null;
    /** @type {WeakMap<object, number>} */ this.ids = new WeakMap();
    this.nextId = 1;
    /** @type {Map<string, any>} */ this.bindGroups = new Map();
    /** @type {Map<number, Set<string>>} */ this.keysByBuffer = new Map();
    /** @type {WeakMap<object, Uint8Array>} */ this.uniformBytes = new WeakMap();
    /** @type {WeakMap<object, string>} */ this.kernelOf = new WeakMap();
    /** @type {WeakMap<object, number>} buffer -> GPUBufferUsage flags */ this.usage = new WeakMap();
    /** @type {WeakMap<object, number[]>} bind group -> ids of its buffers */ this.groupBuffers = new WeakMap();
    /** @type {WeakMap<object, any[][]>} recorded command buffer -> its commands */ this.commandsOf = new WeakMap();
    /** @type {Tape | null} the step being recorded */ this.tape = null;
    /** @type {((id: number) => void) | null} told of each buffer about to be destroyed */ this.onForget = null;
    /** @type {string[] | null} while uploadsOf runs: where its writes went */ this.uploads = null;
    this.queue = this.wrapQueue(device.queue);
    // tvmjs also reads limits, features, lost, label and calls destroy/addEventListener: the device's own.
    return new Proxy(this, {
      get(shim, prop) {
        if (prop in shim) return /** @type {any} */ (shim)[prop];
        const value = device[prop];
        return typeof value === "function" ? value.bind(device) : value;
      },
    });
  }

  /** @param {object} obj */
  idOf(obj) {
    let id = this.ids.get(obj);
    if (id === undefined) {
      id = this.nextId++;
      this.ids.set(obj, id);
    }
    return id;
  }

  /** @param {any} descriptor */
  createBuffer(descriptor) {
    const buffer = this.device.createBuffer(descriptor);
    this.usage.set(buffer, descriptor.usage);
    if (descriptor.usage & UNIFORM) this.uniformBytes.set(buffer, new Uint8Array(0));
    const destroy = buffer.destroy.bind(buffer);
    buffer.destroy = () => {
      this.forget(buffer);
      destroy();
    };
    return buffer;
  }

  /** Drops the bind groups that name a buffer about to be destroyed. @param {object} buffer */
  forget(buffer) {
    if (this.tape) this.tape.discarded = true;
    const id = this.ids.get(buffer);
    if (id !== undefined) this.onForget?.(id);
    const keys = id === undefined ? undefined : this.keysByBuffer.get(id);
    if (!keys) return;
    for (const key of keys) this.bindGroups.delete(key);
    this.keysByBuffer.delete(/** @type {number} */ (id));
  }

  /** @param {any} descriptor */
  createComputePipeline(descriptor) {
    const pipeline = this.device.createComputePipeline(descriptor);
    this.kernelOf.set(pipeline, descriptor.compute?.entryPoint ?? "?");
    return pipeline;
  }

  /** @param {any} descriptor */
  async createComputePipelineAsync(descriptor) {
    const pipeline = await this.device.createComputePipelineAsync(descriptor);
    this.kernelOf.set(pipeline, descriptor.compute?.entryPoint ?? "?");
    return pipeline;
  }

  /** @param {any} descriptor  {layout, entries: [{binding, resource: {buffer, offset?, size?}}]} */
  createBindGroup(descriptor) {
    if (!this.reuse) {
      this.counters.bindGroupsMade++;
      return this.device.createBindGroup(descriptor);
    }
    let key = String(this.idOf(descriptor.layout));
    /** @type {number[]} */ const buffers = [];
    for (const entry of descriptor.entries) {
      const r = entry.resource;
      const id = this.idOf(r.buffer);
      buffers.push(id);
      key += `|${entry.binding}:${id}:${r.offset ?? 0}:${r.size ?? -1}`;
    }
    const cached = this.bindGroups.get(key);
    if (cached) {
      this.counters.bindGroupsReused++;
      return cached;
    }
    const group = this.device.createBindGroup(descriptor);
    this.counters.bindGroupsMade++;
    this.bindGroups.set(key, group);
    this.groupBuffers.set(group, buffers);
    for (const id of buffers) {
      let keys = this.keysByBuffer.get(id);
      if (!keys) this.keysByBuffer.set(id, (keys = new Set()));
      keys.add(key);
    }
    return group;
  }

  /**
   * Where `run` wrote into buffers other than uniforms, as one string (buffer, offset, size of each write,
   * not the bytes): the shape of what it uploaded.
   * @param {() => void} run
   */
  uploadsOf(run) {
    this.uploads = [];
    try {
      run();
      return this.uploads.join(" ");
    } finally {
      this.uploads = null;
    }
  }

  /** Starts recording what is sent to the queue (step_tape.js). */
  record() {
    this.tape = new Tape();
  }

  /** @returns {Tape} what was sent to the queue since record() */
  stopRecording() {
    const tape = /** @type {Tape} */ (this.tape);
    this.tape = null;
    this.counters.stepsRecorded++;
    return tape;
  }

  /** @param {any} descriptor */
  createCommandEncoder(descriptor) {
    return new EncoderShim(this, this.device.createCommandEncoder(descriptor));
  }

  /**
   * Records a submit: the commands each command buffer's encoder got.
   * @param {any[]} buffers
   */
  recordSubmit(buffers) {
    const tape = /** @type {Tape} */ (this.tape);
    const commands = buffers.map((b) => this.commandsOf.get(b));
    if (commands.some((c) => c === undefined)) tape.refuse("a command buffer encoded before recording began");
    tape.ops.push({ commands: /** @type {any[][][]} */ (commands) });
  }

  /**
   * Notes a command that a recorded encoder sent, and the buffers it uses.
   * @param {any[] | null} commands  the encoder's list, null when it is not being recorded
   * @param {any[]} command
   */
  note(commands, command) {
    if (!commands) return;
    commands.push(command);
    const tape = /** @type {Tape} */ (this.tape);
    if (command[0] === GROUP) {
      for (const id of command[3]) tape.buffers.add(id);
    } else if (command[0] === CALL) {
      for (const arg of command[2]) {
        const usage = this.usage.get(arg);
        if (usage === undefined) continue;
        tape.buffers.add(this.idOf(arg));
        if (usage & MAP_READ) tape.refuse("a read-back");
      }
    }
  }

  /** @param {any} queue */
  wrapQueue(queue) {
    const shim = this;
    return {
      /**
       * @param {any} buffer
       * @param {number} offset
       * @param {ArrayBuffer | ArrayBufferView} data
       * @param {number} [dataOffset]  in elements of a typed array, bytes of an ArrayBuffer
       * @param {number} [size]  likewise
       */
      writeBuffer(buffer, offset, data, dataOffset = 0, size) {
        const held = shim.uniformBytes.get(buffer);
        const bytes = asBytes(data, dataOffset, size);
        if (shim.uploads && held === undefined) shim.uploads.push(`${shim.idOf(buffer)}:${offset}:${bytes.byteLength}`);
        const tape = shim.tape;
        if (tape) {
          if (held === undefined) tape.refuse("a write into a buffer that is not a uniform");
          tape.ops.push({ buffer, offset, bytes: bytes.slice() });
          tape.buffers.add(shim.idOf(buffer));
        }
        shim.counters.writeBytes += bytes.byteLength;
        if (held === undefined || offset !== 0) {
          shim.counters.otherWrites++;
        } else if (shim.reuse && sameBytes(held, bytes)) {
          shim.counters.uniformWritesSkipped++;
          return;
        } else {
          shim.counters.uniformWrites++;
          shim.uniformBytes.set(buffer, bytes.slice());
        }
        queue.writeBuffer(buffer, offset, data, dataOffset, size);
      },
      /** @param {any[]} buffers */
      submit(buffers) {
        shim.counters.submits++;
        if (shim.tape) shim.recordSubmit(buffers);
        queue.submit(buffers);
      },
      onSubmittedWorkDone: () => queue.onSubmittedWorkDone(),
      copyExternalImageToTexture: (/** @type {any[]} */ ...args) => queue.copyExternalImageToTexture(...args),
      writeTexture: (/** @type {any[]} */ ...args) => queue.writeTexture(...args),
    };
  }
}

/** Wraps a GPUCommandEncoder: merges consecutive compute passes, submits early, counts, lets the profiler
 * time passes. */
class EncoderShim {
  /**
   * @param {DeviceShim} shim
   * @param {any} encoder
   */
  constructor(shim, encoder) {
    this.shim = shim;
    this.encoder = encoder;
    /** @type {PassShim | null} */ this.open = null;
    this.launches = 0; // since the last submit
    /** @type {any[][] | null} the commands sent to `encoder`, while the shim records */
    this.commands = shim.tape ? [] : null;
    return new Proxy(this, {
      get(self, prop) {
        if (prop in self) return /** @type {any} */ (self)[prop];
        const real = self.encoder;
        const value = real[prop];
        if (typeof value !== "function") return value;
        // Any other command (copies, query resolves, clears) follows the launches encoded so far.
        return (/** @type {any[]} */ ...args) => {
          self.closePass();
          self.shim.note(self.commands, [CALL, prop, args]);
          return value.apply(real, args);
        };
      },
    });
  }

  /** @param {any} [descriptor] */
  beginComputePass(descriptor) {
    const { shim } = this;
    const timer = shim.timer;
    if (timer) {
      this.closePass();
      shim.counters.passes++;
      const timed = timer.passDescriptor(this.encoder) ?? descriptor;
      return new PassShim(shim, this, this.encoder.beginComputePass(timed), false);
    }
    if (shim.submitEvery > 0 && this.launches >= shim.submitEvery) this.submitSoFar();
    if (shim.reuse && !descriptor && this.open) return this.open;
    this.closePass();
    shim.counters.passes++;
    if (descriptor) this.shim.tape?.refuse("a pass with a descriptor");
    shim.note(this.commands, [BEGIN]);
    const pass = new PassShim(shim, this, this.encoder.beginComputePass(descriptor), shim.reuse && !descriptor);
    if (pass.merged) this.open = pass;
    return pass;
  }

  /** Submits what is encoded so far and goes on in a new command encoder (tvmjs never sees the switch). */
  submitSoFar() {
    const { shim } = this;
    shim.queue.submit([this.finish()]); // counted, and recorded while the shim records, as tvmjs's own submits
    this.encoder = shim.device.createCommandEncoder();
    this.commands = shim.tape ? [] : null;
    this.launches = 0;
  }

  closePass() {
    if (this.open) {
      this.open.pass.end();
      this.shim.note(this.commands, [END]);
      this.open = null;
    }
  }

  /** @param {any} [descriptor] */
  finish(descriptor) {
    this.closePass();
    this.shim.timer?.beforeFinish(this.encoder);
    const buffer = this.encoder.finish(descriptor);
    if (this.commands) this.shim.commandsOf.set(buffer, this.commands);
    return buffer;
  }
}

/** Wraps a GPUComputePassEncoder: counts dispatches by kernel; a merged pass ends when its encoder says. */
class PassShim {
  /**
   * @param {DeviceShim} shim
   * @param {EncoderShim} encoder
   * @param {any} pass
   * @param {boolean} merged
   */
  constructor(shim, encoder, pass, merged) {
    this.shim = shim;
    this.encoder = encoder;
    this.pass = pass;
    this.merged = merged;
    this.kernel = "?";
  }

  /** @param {any} pipeline */
  setPipeline(pipeline) {
    this.kernel = this.shim.kernelOf.get(pipeline) ?? "?";
    this.shim.note(this.encoder.commands, [PIPELINE, pipeline]);
    this.pass.setPipeline(pipeline);
  }

  /**
   * @param {number} index
   * @param {any} group
   * @param {any[]} rest
   */
  setBindGroup(index, group, ...rest) {
    if (rest.length > 0) this.shim.tape?.refuse("dynamic offsets");
    this.shim.note(this.encoder.commands, [GROUP, index, group, this.shim.groupBuffers.get(group) ?? []]);
    this.pass.setBindGroup(index, group, ...rest);
  }

  /**
   * @param {number} x
   * @param {number} [y]
   * @param {number} [z]
   */
  dispatchWorkgroups(x, y = 1, z = 1) {
    const c = this.shim.counters;
    c.dispatches++;
    this.encoder.launches++;
    c.kernels.set(this.kernel, (c.kernels.get(this.kernel) ?? 0) + 1);
    this.shim.timer?.named(this.kernel);
    this.shim.note(this.encoder.commands, [DISPATCH, x, y, z, this.kernel]);
    this.pass.dispatchWorkgroups(x, y, z);
  }

  end() {
    if (this.merged) return;
    this.pass.end();
    this.shim.note(this.encoder.commands, [END]);
  }
}

/**
 * The bytes a writeBuffer call would write.
 * @param {ArrayBuffer | ArrayBufferView} data
 * @param {number} dataOffset
 * @param {number | undefined} size
 */
function asBytes(data, dataOffset, size) {
  if (ArrayBuffer.isView(data)) {
    const unit = /** @type {any} */ (data).BYTES_PER_ELEMENT ?? 1;
    const start = data.byteOffset + dataOffset * unit;
    const length = size === undefined ? data.byteLength - dataOffset * unit : size * unit;
    return new Uint8Array(data.buffer, start, length);
  }
  return new Uint8Array(data, dataOffset, size ?? data.byteLength - dataOffset);
}
