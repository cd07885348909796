// Where a step's time goes: the wrapped device's counters (gpu_device.js) over a window of steps, and, where
// the adapter has `timestamp-query`, the GPU time of every compute pass (a pair of timestamps around each
// launch, resolved when its command encoder finishes, read back when the window closes). Chrome rounds
// timestamps to 100 µs unless its WebGPU developer features are on (`--enable-webgpu-developer-features`).

import { emptyCounters, SUBMIT_EVERY } from "./gpu_device.js";

const QUERY_CAPACITY = 4096; // timestamps per window: two per pass
const RESOLVE_ALIGN = 32; // resolveQuerySet's destination offset must be a multiple of 256 bytes (32 queries)

/**
 * @typedef {object} KernelTime
 * @property {string} name
 * @property {number} count  dispatches
 * @property {number | null} gpu_ms  summed pass durations, null without timestamps
 */

/**
 * @typedef {object} WindowReport  one profiled window (some steps), totals over it
 * @property {import("./gpu_device.js").DeviceCounters} counters
 * @property {KernelTime[]} kernels
 * @property {number | null} gpuMs  sum of pass durations
 * @property {number | null} gpuSpanMs  first pass start to last pass end
 * @property {boolean} truncated  more passes than query slots: later passes untimed
 */

export class Profiler {
  /**
   * @param {any} device  the real GPUDevice (queries are made on it)
   * @param {import("./gpu_device.js").DeviceShim} shim  the wrapped device tvmjs uses
   */
  constructor(device, shim) {
    this.device = device;
    this.shim = shim;
    this.timestamps = device.features?.has?.("timestamp-query") ?? false;
    /** @type {any} */ this.querySet = null;
    /** @type {any} */ this.resolveBuffer = null;
    this.used = 0; // query slots taken in this window
    /** @type {string[]} */ this.names = []; // kernel of pass i
    this.truncated = false;
  }

  /** Opens a window: counters reset; with `timed`, every pass gets timestamps (passes are then not merged). */
  start({ timed = true } = {}) {
    this.shim.counters = emptyCounters();
    this.used = 0;
    this.names = [];
    this.truncated = false;
    if (!(timed && this.timestamps)) return;
    if (!this.querySet) {
      const G = /** @type {any} */ (globalThis).GPUBufferUsage;
      this.querySet = this.device.createQuerySet({ type: "timestamp", count: QUERY_CAPACITY });
      this.resolveBuffer = this.device.createBuffer({
        size: QUERY_CAPACITY * 8,
        usage: G.QUERY_RESOLVE | G.COPY_SRC,
      });
    }
    /** @type {{first: number} | null} */ let encoderRange = null;
    /** @type {WeakMap<object, {first: number}>} */ const ranges = new WeakMap();
    this.shim.timer = {
      passDescriptor: (encoder) => {
        encoderRange = ranges.get(encoder) ?? null;
        if (!encoderRange) {
          // Each encoder resolves its own range, starting on a 256-byte boundary.
          this.used = Math.ceil(this.used / RESOLVE_ALIGN) * RESOLVE_ALIGN;
          encoderRange = { first: this.used };
          ranges.set(encoder, encoderRange);
        }
        if (this.used + 2 > QUERY_CAPACITY) {
          this.truncated = true;
          return undefined;
        }
        const begin = this.used;
        this.used += 2;
        this.names[begin / 2] = "?";
        return {
          timestampWrites: {
            querySet: this.querySet,
            beginningOfPassWriteIndex: begin,
            endOfPassWriteIndex: begin + 1,
          },
        };
      },
      named: (name) => {
        if (this.used >= 2) this.names[(this.used - 2) / 2] = name;
      },
      beforeFinish: (encoder) => {
        const range = ranges.get(encoder);
        if (!range || this.used <= range.first) return;
        encoder.resolveQuerySet(
          this.querySet,
          range.first,
          this.used - range.first,
          this.resolveBuffer,
          range.first * 8,
        );
      },
    };
  }

  /**
   * Closes the window (call once its work is submitted and done) and reports it.
   * @returns {Promise<WindowReport>}
   */
  async stop() {
    const timed = this.shim.timer !== null;
    this.shim.timer = null;
    const counters = this.shim.counters;
    /** @type {Map<string, number>} */ const gpuByKernel = new Map();
    let gpuMs = null;
    let gpuSpanMs = null;
    if (timed && this.used > 0) {
      const times = await this.readTimes();
      let first = Infinity;
      let last = -Infinity;
      gpuMs = 0;
      for (let i = 0; i < this.names.length; i++) {
        const name = this.names[i];
        if (name === undefined) continue; // alignment gap
        const begin = times[2 * i];
        const end = times[2 * i + 1];
        if (!(end >= begin) || begin === 0n) continue; // a pass that never ran, or an unwritten slot
        const ms = Number(end - begin) / 1e6;
        gpuMs += ms;
        gpuByKernel.set(name, (gpuByKernel.get(name) ?? 0) + ms);
        first = Math.min(first, Number(begin));
        last = Math.max(last, Number(end));
      }
      gpuSpanMs = last > first ? (last - first) / 1e6 : 0;
    }
    const kernels = [...counters.kernels].map(([name, count]) => ({
      name,
      count,
      gpu_ms: gpuMs === null ? null : (gpuByKernel.get(name) ?? 0),
    }));
    return { counters, kernels, gpuMs, gpuSpanMs, truncated: this.truncated };
  }

  /** @returns {Promise<BigUint64Array>} the resolved timestamps of this window */
  async readTimes() {
    const G = /** @type {any} */ (globalThis);
    const bytes = this.used * 8;
    const staging = this.device.createBuffer({
      size: bytes,
      usage: G.GPUBufferUsage.MAP_READ | G.GPUBufferUsage.COPY_DST,
    });
    const encoder = this.device.createCommandEncoder();
    encoder.copyBufferToBuffer(this.resolveBuffer, 0, staging, 0, bytes);
    this.device.queue.submit([encoder.finish()]);
    await staging.mapAsync(G.GPUMapMode.READ);
    const times = new BigUint64Array(staging.getMappedRange().slice(0));
    staging.destroy();
    return times;
  }

  dispose() {
    this.querySet?.destroy();
    this.resolveBuffer?.destroy();
  }
}

/**
 * @typedef {object} PhaseProfile  one step of a phase (medians over its steps)
 * @property {number} tokens  tokens a step feeds the model
 * @property {number} steps
 * @property {number} wall_ms  from the call to the token (sampling included)
 * @property {number} encode_ms
 * @property {number} sample_ms  choosing the token: the GPU kernels' issue time, or the CPU argmax
 * @property {number} wait_ms
 * @property {number} read_ms
 * @property {number} read_bytes
 * @property {number | null} gpu_ms  GPU busy time (timed steps: one pass per launch, so no pass merging)
 * @property {number | null} gpu_span_ms
 * @property {number} dispatches
 * @property {number} dispatches_per_layer  launches in each layer (a kernel launched n times: floor(n / layers))
 * @property {number} dispatches_outside_layers  the rest: embedding, final norm, LM head, sampling
 * @property {number} passes
 * @property {number} submits
 * @property {number} bind_groups_made
 * @property {number} bind_groups_reused
 * @property {number} uniform_writes
 * @property {number} uniform_writes_skipped
 * @property {number} steps_recorded  of the phase's steps, those recorded for replay (step_tape.js)
 * @property {number} steps_replayed  ... and those replayed from a recording
 * @property {number[]} chosen  the token each untimed step chose (greedy: the same in every configuration)
 * @property {KernelTime[]} kernels  per step
 * @property {boolean} truncated
 */

/**
 * The runtime settings a profile compares: as shipped, then without each saving in turn.
 * @typedef {{name: string, replay: boolean, reuse: boolean, gpuSampling: boolean, submitEvery: number}}
 *   ProfileConfiguration
 */
export const PROFILE_CONFIGURATIONS = Object.freeze([
  { name: "as shipped", replay: true, reuse: true, gpuSampling: true, submitEvery: SUBMIT_EVERY },
  { name: "replayed, a submit every 64 launches", replay: true, reuse: true, gpuSampling: true, submitEvery: 64 },
  { name: "replayed, one submit a step", replay: true, reuse: true, gpuSampling: true, submitEvery: 0 },
  { name: "every step through the VM", replay: false, reuse: true, gpuSampling: true, submitEvery: SUBMIT_EVERY },
  { name: "and one submit a step", replay: false, reuse: true, gpuSampling: true, submitEvery: 0 },
  { name: "and sampling on the CPU", replay: false, reuse: true, gpuSampling: false, submitEvery: 0 },
  { name: "and no reuse (tvmjs as it is)", replay: false, reuse: false, gpuSampling: false, submitEvery: 0 },
]);

const GREEDY = { temperature: 0, top_p: 1, logprobs: false };

/**
 * Profiles a prefill of `promptIds` and greedy decode steps through the pipeline's own calls, once per
 * configuration. Steps are timed untimed first (passes merged, as requests run them: wall time and its
 * parts), then with timestamps (GPU time by kernel).
 * @param {any} pipeline  a ModelPipeline
 * @param {number[]} promptIds
 * @param {{decodeSteps?: number, configurations?: readonly ProfileConfiguration[]}} [options]
 */
export async function profileSteps(
  pipeline,
  promptIds,
  { decodeSteps = 16, configurations = PROFILE_CONFIGURATIONS } = {},
) {
  const profiler = /** @type {Profiler} */ (pipeline.profiler);
  const layers = layerCount(pipeline.metadata);
  const saved = {
    replay: pipeline.replaySteps,
    reuse: pipeline.shim.reuse,
    submitEvery: pipeline.shim.submitEvery,
    gpuSampling: pipeline.gpuSampling,
  };
  const results = [];
  try {
    for (const config of configurations) {
      pipeline.replaySteps = config.replay;
      pipeline.shim.reuse = config.reuse;
      pipeline.shim.submitEvery = config.submitEvery;
      pipeline.gpuSampling = config.gpuSampling;
      const gpu = pipeline.canSampleOnGpu(GREEDY);
      /** @param {number[] | null} ids  a prompt to prefill (after a reset), or null for one decode step */
      const step = async (ids, last = 0) => {
        const t = performance.now();
        let token;
        let sample;
        if (gpu) {
          const draw = { temperature: 0, uniform: 0, counts: new Map() };
          token = ids ? await pipeline.prefillToken(ids, draw) : await pipeline.decodeToken(last, draw);
          sample = pipeline.timing.sample;
        } else {
          const logits = ids ? await pipeline.prefill(ids) : await pipeline.decode(last);
          const s = performance.now();
          token = argmaxOf(logits);
          sample = performance.now() - s;
        }
        return { token, wall: performance.now() - t, ...pipeline.timing, sample };
      };
      const measure = async (
        /** @type {() => Promise<any>} */ run,
        /** @type {number} */ n,
        /** @type {boolean} */ timed,
      ) => {
        const out = [];
        for (let i = 0; i < n; i++) {
          profiler.start({ timed });
          const s = await run();
          out.push({ ...s, report: await profiler.stop() });
        }
        return out;
      };
      const prefill = async () => {
        pipeline.reset();
        return step(promptIds);
      };
      let last = (await prefill()).token; // warm-up: first use of this configuration's objects
      for (let i = 0; i < 2; i++) last = (await step(null, last)).token;
      const prefillRuns = await measure(prefill, 3, false);
      const prefillTimed = await measure(prefill, 2, true);
      last = prefillTimed[prefillTimed.length - 1].token;
      const decode = async () => {
        const s = await step(null, last);
        last = s.token;
        return s;
      };
      const decodeRuns = await measure(decode, decodeSteps, false);
      const decodeTimed = await measure(decode, Math.min(decodeSteps, 4), true);
      results.push({
        name: config.name,
        gpu_sampling: gpu,
        prefill: phaseProfile(promptIds.length, prefillRuns, prefillTimed, layers),
        decode: phaseProfile(1, decodeRuns, decodeTimed, layers),
      });
    }
  } finally {
    pipeline.replaySteps = saved.replay;
    pipeline.shim.reuse = saved.reuse;
    pipeline.shim.submitEvery = saved.submitEvery;
    pipeline.gpuSampling = saved.gpuSampling;
    pipeline.reset();
  }
  const replay = pipeline.tapes?.summary() ?? null;
  return { adapter: { ...pipeline.gpu.info }, timestamps: profiler.timestamps, layers, replay, configurations: results };
}

/**
 * @param {number} tokens
 * @param {any[]} runs  untimed steps
 * @param {any[]} timed  steps with timestamps
 * @param {number} layers
 * @returns {PhaseProfile}
 */
function phaseProfile(tokens, runs, timed, layers) {
  const med = (/** @type {(r: any) => number} */ f) => median(runs.map(f));
  const c = runs[runs.length - 1].report.counters; // every step of a phase launches the same kernels
  /** @type {Map<string, {count: number, gpu: number}>} */ const kernels = new Map();
  for (const r of timed) {
    for (const k of r.report.kernels) {
      const e = kernels.get(k.name) ?? { count: 0, gpu: 0 };
      kernels.set(k.name, { count: e.count + k.count, gpu: e.gpu + (k.gpu_ms ?? 0) });
    }
  }
  const hasGpu = timed.length > 0 && timed.every((r) => r.report.gpuMs !== null);
  const perStep = [...kernels].map(([name, k]) => ({
    name,
    count: k.count / Math.max(timed.length, 1),
    gpu_ms: hasGpu ? k.gpu / timed.length : null,
  }));
  // A kernel launched n times a step counts floor(n / layers) in each layer (RMSNorm: twice a layer, once after).
  const inLayers = layers > 0 ? perStep.reduce((n, k) => n + Math.floor(k.count / layers) * layers, 0) : 0;
  return {
    tokens,
    steps: runs.length,
    wall_ms: med((r) => r.wall),
    encode_ms: med((r) => r.encode),
    sample_ms: med((r) => r.sample),
    wait_ms: med((r) => r.wait),
    read_ms: med((r) => r.read),
    read_bytes: runs[runs.length - 1].readBytes,
    gpu_ms: hasGpu ? median(timed.map((r) => r.report.gpuMs)) : null,
    gpu_span_ms: hasGpu ? median(timed.map((r) => r.report.gpuSpanMs)) : null,
    dispatches: c.dispatches,
    dispatches_per_layer: layers > 0 ? inLayers / layers : 0,
    dispatches_outside_layers: c.dispatches - inLayers,
    passes: c.passes,
    submits: c.submits,
    bind_groups_made: c.bindGroupsMade,
    bind_groups_reused: c.bindGroupsReused,
    uniform_writes: c.uniformWrites,
    uniform_writes_skipped: c.uniformWritesSkipped,
    chosen: runs.map((r) => r.token),
    steps_recorded: runs.reduce((n, r) => n + r.report.counters.stepsRecorded, 0),
    steps_replayed: runs.reduce((n, r) => n + r.report.counters.stepsReplayed, 0),
    kernels: perStep,
    truncated: timed.some((r) => r.report.truncated),
  };
}

/** @param {number[]} values */
function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** @param {ArrayLike<number>} logits */
function argmaxOf(logits) {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/**
 * Decoder layers, from the parameter names in the library's _metadata ("model.layers.<i>.").
 * @param {Record<string, any>} metadata
 */
function layerCount(metadata) {
  let layers = 0;
  for (const p of metadata.params ?? []) {
    const m = /\.layers\.(\d+)\./.exec(p.name);
    if (m) layers = Math.max(layers, Number(m[1]) + 1);
  }
  return layers;
}
