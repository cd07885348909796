// Decode steps replayed from a recording instead of interpreted. A decode step is a few hundred kernel
// launches, and issuing each one through the Relax VM, tvmjs's FFI and its launch function costs ~15 µs of
// JS and wasm: more than the GPU needs for the whole step. Yet at one batch shape the step is the same
// commands every time: the same pipelines, bind groups (the VM's memory pool hands out the same buffers) and
// scalar (uniform) arguments, in the same order. Everything that changes from token to token lives in GPU
// buffers written before the step: the token id, and the KV cache's page tables and positions, which TVM's
// KV cache uploads when asked for its query positions (pipeline.js does that first).
//
// So the wrapped device (gpu_device.js) records what a VM decode step sends to the queue: uniform writes
// with their bytes, and each submitted command buffer as the list of commands its encoder got. The
// recording is keyed by the shape of the KV cache's uploads (which buffers, offsets and sizes: the page
// count changes the kernels' scalar arguments, so it changes the key). A recording is trusted only once a
// second VM step with the same key recorded the same commands and bytes; from then on a step with that key is
// replayed: the recorded writes (skipped where the uniform already holds them) and commands, a few WebGPU
// calls a launch, in as few passes and submits as the wrapped device's setting asks. A recording that did anything else (wrote another buffer, read back,
// freed a buffer) is never replayed, and one whose buffers die is dropped.
//
// What this relies on, and pipeline.js keeps: buffers the VM's pool lends during a step are scratch once
// the step is over (the step's logits are copied into a buffer of the pipeline's own, and no VM output is
// held from one step to the next), so a replay may overwrite them.

/** Encoder commands, as recorded: [BEGIN] [END] [PIPELINE, pipeline] [GROUP, index, group, its buffers' ids]
 * [DISPATCH, x, y, z, kernel name] [CALL, method, args]. */
export const BEGIN = 0;
export const END = 1;
export const PIPELINE = 2;
export const GROUP = 3;
export const DISPATCH = 4;
export const CALL = 5;

/**
 * @typedef {{buffer: any, offset: number, bytes: Uint8Array}} WriteOp  a uniform write
 * @typedef {{commands: any[][][]}} SubmitOp  one queue.submit: each command buffer's commands
 */

/** What one VM step sent to the queue, in order. */
export class Tape {
  constructor() {
    /** @type {(WriteOp | SubmitOp)[]} */ this.ops = [];
    /** @type {Set<number>} ids (DeviceShim.idOf) of the buffers the commands use */
    this.buffers = new Set();
    /** why steps like this one must not be replayed; "" when they may */
    this.refused = "";
    /** a buffer died while recording (tvmjs replaced a uniform buffer, ...): this recording is dropped */
    this.discarded = false;
  }

  /** @param {string} why */
  refuse(why) {
    this.refused ||= why;
  }

  /**
   * Where two recordings differ first: "" when they hold the same commands, pipelines, dispatch sizes and
   * uniform bytes in the same order. Bind groups and copies' buffers may differ: the VM's memory pool lends
   * the same scratch buffers in another order from one step to the next (it hands back the last one freed
   * first).
   * @param {Tape} other
   */
  difference(other) {
    const n = Math.max(this.ops.length, other.ops.length);
    for (let i = 0; i < n; i++) {
      const a = this.ops[i];
      const b = other.ops[i];
      if (a === undefined || b === undefined) return `op ${i}: one recording ends`;
      if ("bytes" in a) {
        if (!("bytes" in b)) return `op ${i}: a write against a submit`;
        if (a.buffer !== b.buffer || a.offset !== b.offset) return `op ${i}: writes to another buffer`;
        if (!sameBytes(a.bytes, b.bytes)) return `op ${i}: uniform [${a.bytes}] against [${b.bytes}]`;
      } else {
        if (!("commands" in b)) return `op ${i}: a submit against a write`;
        const where = commandsDifference(a.commands, b.commands);
        if (where) return `op ${i}: ${where}`;
      }
    }
    return "";
  }
}

/** Recordings a replay may use, keyed by the KV cache's upload shape; each trusted after a second equal one. */
export class TapeBook {
  /** @param {{capacity?: number, maxMismatches?: number}} [options] */
  constructor({ capacity = 256, maxMismatches = 8 } = {}) {
    this.capacity = capacity;
    this.maxMismatches = maxMismatches;
    /** @type {Map<string, {tape: Tape, trusted: boolean}>} insertion order = least recently used first */
    this.entries = new Map();
    /** @type {Map<string, string>} keys whose recordings may never be replayed -> why */
    this.refusedKeys = new Map();
    this.mismatches = 0;
    /** where the last two recordings of one key differed */
    this.lastMismatch = "";
    this.enabled = true;
  }

  /**
   * The trusted recording for `key`, or null.
   * @param {string} key
   */
  trusted(key) {
    const entry = this.entries.get(key);
    if (!entry?.trusted) return null;
    this.entries.delete(key); // most recently used last
    this.entries.set(key, entry);
    return entry.tape;
  }

  /**
   * Whether a VM step with this key should be recorded.
   * @param {string} key
   */
  wants(key) {
    return this.enabled && !this.refusedKeys.has(key);
  }

  /**
   * Takes a VM step's recording: the first for its key is kept; a second that does the same (`difference`)
   * makes it trusted. Recordings that keep disagreeing mean the steps are not replayable at all (something
   * per token is passed as a scalar), and replaying stops.
   * @param {string} key
   * @param {Tape} tape
   */
  offer(key, tape) {
    if (tape.discarded) return;
    if (!tape.refused && !writesOnce(tape)) tape.refuse("a uniform written twice in one step");
    if (tape.refused) {
      this.refusedKeys.set(key, tape.refused);
      this.entries.delete(key);
      return;
    }
    const held = this.entries.get(key);
    const difference = held ? held.tape.difference(tape) : "no recording yet";
    if (!difference) {
      held.trusted = true;
      return;
    }
    if (held) this.lastMismatch = difference;
    if (held && ++this.mismatches >= this.maxMismatches) {
      this.enabled = false;
      this.entries.clear();
      return;
    }
    this.entries.delete(key);
    this.entries.set(key, { tape, trusted: false });
    while (this.entries.size > this.capacity) {
      this.entries.delete(/** @type {string} */ (this.entries.keys().next().value));
    }
  }

  /** For the profile: how many recordings are trusted or waiting, and why steps were not replayable. */
  summary() {
    const trusted = [...this.entries.values()].filter((e) => e.trusted).length;
    return {
      enabled: this.enabled,
      trusted,
      waiting: this.entries.size - trusted,
      mismatches: this.mismatches,
      last_mismatch: this.lastMismatch,
      refused: [...new Set(this.refusedKeys.values())],
    };
  }

  /**
   * Drops the recordings that use a buffer about to be destroyed.
   * @param {number} id
   */
  forgetBuffer(id) {
    for (const [key, entry] of this.entries) if (entry.tape.buffers.has(id)) this.entries.delete(key);
  }
}

/**
 * Sends a recording to the GPU again through the wrapped device: its uniform writes (the wrapper skips those
 * whose bytes the buffer already holds) and its commands, counted as the VM's launches are. The commands go
 * into one compute pass per submit, a submit every `shim.submitEvery` launches (0: one a step), whatever
 * submits and passes the recorded step had: every uniform is written once in a recording (`offer` keeps
 * only those), so its write may come before any launch of the step is submitted.
 * @param {import("./gpu_device.js").DeviceShim} shim
 * @param {Tape} tape
 */
export function replay(shim, tape) {
  const { device, counters: c, submitEvery } = shim;
  /** @type {any} */ let encoder = null;
  /** @type {any} */ let pass = null;
  let launches = 0;
  const open = () => {
    encoder ??= device.createCommandEncoder();
    if (!pass) {
      pass = encoder.beginComputePass();
      c.passes++;
    }
    return pass;
  };
  const close = () => {
    pass?.end();
    pass = null;
  };
  const submit = () => {
    close();
    if (!encoder) return;
    device.queue.submit([encoder.finish()]);
    c.submits++;
    encoder = null;
    launches = 0;
  };
  for (const op of tape.ops) {
    if ("bytes" in op) {
      shim.queue.writeBuffer(op.buffer, op.offset, op.bytes);
      continue;
    }
    for (const commands of op.commands) {
      for (const command of commands) {
        switch (command[0]) {
          case PIPELINE:
            open().setPipeline(command[1]);
            break;
          case GROUP:
            open().setBindGroup(command[1], command[2]);
            break;
          case DISPATCH:
            open().dispatchWorkgroups(command[1], command[2], command[3]);
            c.dispatches++;
            c.kernels.set(command[4], (c.kernels.get(command[4]) ?? 0) + 1);
            if (submitEvery > 0 && ++launches >= submitEvery) submit();
            break;
          case CALL:
            close();
            encoder ??= device.createCommandEncoder();
            encoder[command[1]](...command[2]);
            break;
          default: // BEGIN, END: passes are this function's own
        }
      }
    }
  }
  submit();
  c.stepsReplayed++;
}

/**
 * @param {any[][][]} a
 * @param {any[][][]} b
 * @returns {string} where two submits' commands differ first, "" when they do not
 */
function commandsDifference(a, b) {
  if (a.length !== b.length) return "command buffer counts differ";
  for (let i = 0; i < a.length; i++) {
    if (a[i].length !== b[i].length) return `command buffer ${i}: command counts differ`;
    for (let j = 0; j < a[i].length; j++) {
      const x = a[i][j];
      const y = b[i][j];
      const same =
        x[0] === GROUP
          ? y[0] === GROUP && x[1] === y[1]
          : x.length === y.length && x.every((v, k) => (Array.isArray(v) ? sameArgs(v, y[k]) : v === y[k]));
      if (!same) return `command buffer ${i}, command ${j} differs: [${x}] against [${y}]`;
    }
  }
  return "";
}

/**
 * A copy's arguments: the same numbers; buffers may differ, as bind groups may.
 * @param {any[]} a
 * @param {any} b
 */
function sameArgs(a, b) {
  const buffer = (/** @type {any} */ v) => typeof v === "object" && v !== null;
  return Array.isArray(b) && a.length === b.length && a.every((v, i) => (buffer(v) ? buffer(b[i]) : v === b[i]));
}

/**
 * @param {Uint8Array} a
 * @param {Uint8Array} b
 */
export function sameBytes(a, b) {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Whether no buffer is written twice in the recording.
 * @param {Tape} tape
 */
function writesOnce(tape) {
  const written = new Set();
  for (const op of tape.ops) {
    if (!("bytes" in op)) continue;
    if (written.has(op.buffer)) return false;
    written.add(op.buffer);
  }
  return true;
}
