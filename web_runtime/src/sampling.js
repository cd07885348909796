// Choosing the next token on the GPU with the model library's sampling functions (webbuild/build/sampling.py
// compiles them, under the names WebLLM looks up): logit_bias and presence/frequency penalties in place,
// then the argmax (greedy) or a draw from softmax(logits / temperature) by inverse CDF in token-id order,
// the same rule as sampler.js's drawToken at top_p = 1, with the same uniform number from the request's
// seeded generator. A grammar's bitmask (grammar.js) masks the logits with apply_bitmask_inplace after the bias
// and penalties, as the Python engine masks them. One int32 comes back instead of vocab_size floats, and it
// stays on the GPU as the next step's input (pipeline.decodeChosen), so that step can be sent before the
// token is read. Requests that want logprobs or top_p < 1 keep sampling on the CPU (pipeline.canSampleOnGpu).

/**
 * What one token's choice needs: the sampling settings and the request's state.
 * @typedef {object} Draw
 * @property {number} temperature  0 = greedy
 * @property {number} uniform  the generator's next number in [0, 1) (drawn only when temperature > 0)
 * @property {Record<string, number> | null} [logitBias]
 * @property {number} [presence]
 * @property {number} [frequency]
 * @property {Map<number, number>} [counts]  token id -> times generated so far
 * @property {Int32Array | null} [bitmask]  the tokens a grammar allows next (bit t % 32 of word t >> 5)
 */

/** The library functions used here; a library that lacks one of them samples on the CPU. */
const FUNCTIONS = {
  argmax: "argmax_logits",
  softmax: "softmax_with_temperature",
  sample: "sample_with_top_p",
  bias: "apply_logit_bias_inplace",
  penalty: "apply_penalty_inplace",
};
/** Used where present: a library without it samples grammar-constrained requests on the CPU. */
const BITMASK = "apply_bitmask_inplace";

/**
 * The sampling settings a request's next token needs, drawing its uniform number now (when temperature > 0,
 * one per token, as drawToken does), so the generator advances the same way on the GPU path as on the CPU.
 * @param {import("./sampler.js").SamplingParams} params
 * @param {Map<number, number>} counts
 * @param {() => number} rng
 * @returns {Draw}
 */
export function drawFor(params, counts, rng) {
  return {
    temperature: params.temperature,
    uniform: params.temperature > 0 ? rng() : 0,
    logitBias: params.logit_bias ?? null,
    presence: params.presence_penalty ?? 0,
    frequency: params.frequency_penalty ?? 0,
    counts,
  };
}

export class GpuSampler {
  /**
   * The sampler of a loaded model library, or null when it lacks the functions (older builds).
   * @param {any} tvm
   * @param {any} vm
   * @param {any} device  tvmjs's webgpu device
   * @param {any} context  tvmjs's WebGPU context (its GPUDevice, buffers and pending commands)
   * @returns {GpuSampler | null}
   */
  static fromLibrary(tvm, vm, device, context) {
    /** @type {Record<string, any>} */ const fns = {};
    for (const [key, name] of Object.entries(FUNCTIONS)) {
      try {
        fns[key] = tvm.detachFromCurrentScope(vm.getFunction(name));
      } catch {
        for (const f of Object.values(fns)) f.dispose();
        return null;
      }
    }
    try {
      fns.bitmask = tvm.detachFromCurrentScope(vm.getFunction(BITMASK));
    } catch {
      // an older library: no grammar on the GPU
    }
    return new GpuSampler(tvm, device, context, fns);
  }

  /**
   * @param {any} tvm
   * @param {any} device
   * @param {any} context
   * @param {Record<string, any>} fns
   */
  constructor(tvm, device, context, fns) {
    this.tvm = tvm;
    this.device = device;
    this.context = context;
    this.fns = fns;
    const keep = (/** @type {any} */ t) => tvm.detachFromCurrentScope(t);
    /** the last token chosen, on the GPU: read back by `read`, and the input of a step sent before that */
    this.chosen = keep(tvm.empty([1], "int32", device));
    /** @type {any[]} 4-byte GPUBuffers to read a token through, free for reuse (one per read in flight) */
    this.staging = [];
    this.temperature = keep(tvm.empty([1], "float32", device));
    this.uniform = keep(tvm.empty([1], "float32", device));
    this.topP = keep(tvm.empty([1], "float32", device).copyFrom([1]));
    this.sampleIndices = keep(tvm.empty([1], "int32", device).copyFrom([0]));
    this.seqIds = this.sampleIndices; // sequence 0, the only one
    /** @type {any} */ this.identity = null; // [1, vocab] int32 0..vocab-1: token order for sample_with_top_p
    /** @type {any} */ this.allowed = null; // [1, ceil(vocab / 32)] int32: a grammar's bitmask
    this.lastTemperature = NaN;
  }

  /**
   * Queues the choice of the next token from `logits` ([1, 1, vocab] on the GPU; bias and penalties are
   * added to it in place) into `chosen`. Call inside a tvmjs scope; then `read()`.
   * @param {any} logits
   * @param {Draw} draw
   */
  queue(logits, draw) {
    const tvm = this.tvm;
    const vocab = logits.shape[logits.shape.length - 1];
    const rows = logits.view([1, vocab]);
    const bias = Object.entries(draw.logitBias ?? {})
      .map(([id, b]) => [Number(id), b])
      .filter(([id]) => id >= 0 && id < vocab);
    if (bias.length > 0) {
      this.fns.bias(
        rows,
        this.ints(bias.map(() => 0)),
        this.ints(bias.map(([id]) => id)),
        this.floats(bias.map(([, b]) => b)),
      );
    }
    const counts = [...(draw.counts ?? [])].filter(([id]) => id >= 0 && id < vocab);
    if ((draw.presence || draw.frequency) && counts.length > 0) {
      const penalties = tvm
        .empty([1, 3], "float32", this.device)
        .copyFrom([draw.presence ?? 0, draw.frequency ?? 0, 1]);
      this.fns.penalty(
        rows,
        this.seqIds,
        this.ints(counts.map(() => 0)),
        this.ints(counts.map(([id]) => id)),
        this.ints(counts.map(([, c]) => c)),
        penalties,
      );
    }
    if (draw.bitmask) {
      if (this.allowed === null || this.allowed.shape[1] !== draw.bitmask.length) {
        this.allowed?.dispose();
        this.allowed = tvm.detachFromCurrentScope(tvm.empty([1, draw.bitmask.length], "int32", this.device));
      }
      this.fns.bitmask(rows, this.seqIds, this.allowed.copyFrom(draw.bitmask));
    }
    let token;
    if (draw.temperature <= 0) {
      token = this.fns.argmax(rows);
    } else {
      if (draw.temperature !== this.lastTemperature) {
        this.temperature.copyFrom([draw.temperature]);
        this.lastTemperature = draw.temperature;
      }
      this.uniform.copyFrom([draw.uniform]);
      const probs = this.fns.softmax(logits.view([1, 1, vocab]), this.temperature);
      token = this.fns.sample(probs.view([1, vocab]), this.order(vocab), this.uniform, this.sampleIndices, this.topP);
    }
    this.chosen.copyFrom(token);
  }

  /**
   * Sends what tvmjs has encoded and a copy of `chosen` into a buffer of its own, so the token's read waits
   * for the step that chose it and not for steps sent after it (tvmjs's own read-back waits for the whole
   * queue).
   * @returns {Promise<number>} the token id
   */
  read() {
    const G = /** @type {any} */ (globalThis);
    const gpu = this.context.device;
    this.context.flushCommands();
    const staging =
      this.staging.pop() ?? gpu.createBuffer({ size: 4, usage: G.GPUBufferUsage.MAP_READ | G.GPUBufferUsage.COPY_DST });
    const encoder = gpu.createCommandEncoder();
    encoder.copyBufferToBuffer(this.context.gpuBufferFromPtr(this.chosen.dataPtr), 0, staging, 0, 4);
    gpu.queue.submit([encoder.finish()]);
    return staging.mapAsync(G.GPUMapMode.READ).then(() => {
      const id = new Int32Array(staging.getMappedRange(0, 4))[0];
      staging.unmap();
      this.staging.push(staging);
      return id;
    });
  }

  /** @param {number} vocab */
  order(vocab) {
    if (this.identity === null || this.identity.shape[1] !== vocab) {
      this.identity?.dispose();
      const ids = Int32Array.from({ length: vocab }, (_, i) => i);
      this.identity = this.tvm.detachFromCurrentScope(this.tvm.empty([1, vocab], "int32", this.device).copyFrom(ids));
    }
    return this.identity;
  }

  /** @param {number[]} values */
  ints(values) {
    return this.tvm.empty([values.length], "int32", this.device).copyFrom(values);
  }

  /** @param {number[]} values */
  floats(values) {
    return this.tvm.empty([values.length], "float32", this.device).copyFrom(values);
  }

  dispose() {
    for (const buffer of this.staging) buffer.destroy();
    const tensors = [this.chosen, this.temperature, this.uniform, this.topP, this.sampleIndices, this.identity];
    for (const t of [...tensors, this.allowed]) {
      t?.dispose();
    }
    for (const f of Object.values(this.fns)) f.dispose();
  }
}
