// The model on the GPU, through the TVM JS runtime (tvmjs): instantiate the model library, load weights
// from tensor-cache.json, create the paged KV cache, and run prefill/decode with the VM functions the
// library exports (embed, prefill, decode, batch_verify, create_tir_paged_kv_cache, _metadata). Logits come
// back to the CPU as Float32Array for the engine to sample from; when a request needs no logprobs and the
// library has the sampling kernels (sampling.js), the token is chosen on the GPU and only its id comes back.
// tvmjs draws on a wrapped device (gpu_device.js) that reuses bind groups, uniform writes and compute passes
// across steps and counts launches for the profile (profile.js).
//
// Memory discipline: every tvmjs object returned inside beginScope()/endScope() is freed at endScope()
// unless detached. Long-lived objects (VM, functions, params, KV cache, the CPU logits buffer) are detached
// once at load; per-step tensors live in a scope per forward call, so decoding does not leak GPU memory.

import { loadTvmjs } from "./vendor.js";
import { DeviceLostError, ModelLoadError, WebGPUUnavailableError } from "./errors.js";
import { errorText } from "./config.js";
import { fetchTensorCacheIndex, variantFiles } from "./cache.js";
import { DeviceShim } from "./gpu_device.js";
import { Profiler } from "./profile.js";
import { GpuSampler } from "./sampling.js";
import { replay, TapeBook } from "./step_tape.js";

const PAGE_SIZE = 16;
// Tokens per batch_verify call when scoring: its logits ([n, vocab] float32) pass through a CPU buffer in
// wasm memory, so chunks stay well below prefill_chunk_size (49152-token vocab: 25 MB for 128 rows).
const VERIFY_CHUNK = 128;

/** @returns {number} milliseconds, monotonic */
const nowMs = () => performance.now();

/**
 * Where the last prefill/decode call spent its time, in ms (the profile reads it).
 * @typedef {object} StepTiming
 * @property {number} encode  JS time issuing the VM call (embedding, layers, head): wasm + WebGPU encoding
 * @property {number} sample  issuing the GPU sampling kernels (0 when the engine samples on the CPU)
 * @property {number} wait  until the GPU finished and the result was mapped
 * @property {number} read  copying the result out of wasm memory
 * @property {number} readBytes
 */

/**
 * The adapter and device the model runs on. The WebGPU objects are typed `any` so that the package's .d.ts
 * files do not require @webgpu/types of their users.
 * @typedef {object} GpuInfo
 * @property {any} [adapter]  the GPUAdapter
 * @property {any} [device]  the GPUDevice; destroyed by the engine when loading fails
 * @property {boolean} hasShaderF16
 * @property {{vendor?: string, architecture?: string, description?: string, isFallbackAdapter?: boolean}} info
 */

/**
 * @typedef {object} LoadProgress  reported while a model loads
 * @property {"library" | "download" | "weights" | "shaders" | "ready" | string} phase
 * @property {number} loaded  bytes for library/download/weights; finished fraction (0..1) for shaders
 * @property {number} total  bytes, or 1 for shaders
 * @property {string} text  for humans
 */

/**
 * Finds the WebGPU adapter and opens a device with the limits tvmjs asks for.
 * @returns {Promise<GpuInfo>}
 */
export async function detectGpu() {
  const tip =
    "Use a browser with WebGPU (Chrome or Edge 113+, Safari 26+); on Linux, enable " +
    "chrome://flags/#enable-unsafe-webgpu.";
  if (globalThis.isSecureContext === false) {
    throw new WebGPUUnavailableError("WebGPU needs a secure context: open this page over https:// or localhost.", {
      tip: "Serve the site over HTTPS, or on http://localhost.",
    });
  }
  if (typeof navigator === "undefined" || !(/** @type {any} */ (navigator).gpu)) {
    throw new WebGPUUnavailableError("This browser does not support WebGPU (navigator.gpu is missing).", { tip });
  }
  let adapter;
  try {
    adapter = await /** @type {any} */ (navigator).gpu.requestAdapter({ powerPreference: "high-performance" });
  } catch (err) {
    throw new WebGPUUnavailableError(`No usable WebGPU adapter: ${errorText(err)}`, { tip, cause: err });
  }
  if (!adapter) throw new WebGPUUnavailableError("No usable WebGPU adapter was found.", { tip });
  let device;
  try {
    device = await adapter.requestDevice(deviceRequest(adapter));
  } catch (err) {
    throw new WebGPUUnavailableError(`The WebGPU adapter refused a device: ${errorText(err)}`, { tip, cause: err });
  }
  const hasShaderF16 = device.features.has("shader-f16");
  const i = adapter.info ?? {};
  return {
    adapter,
    device,
    hasShaderF16,
    info: {
      vendor: i.vendor,
      architecture: i.architecture,
      description: i.description,
      isFallbackAdapter: i.isFallbackAdapter ?? adapter.isFallbackAdapter,
    },
  };
}

/**
 * The device tvmjs's model libraries need (its own detectGPUDevice asks the same: 1 GiB buffers, or the
 * WebGPU defaults; 32 KiB workgroup storage; 10 storage buffers; the largest of 1024/512/256 invocations;
 * shader-f16 and subgroups when present), plus timestamp-query when present, for the profile.
 * @param {any} adapter
 */
export function deviceRequest(adapter) {
  const limits = adapter.limits;
  const fits = (/** @type {number[]} */ wanted, /** @type {number} */ limit) => wanted.find((w) => w <= limit);
  const maxBufferSize = fits([1 << 30, 1 << 28], limits.maxBufferSize);
  const maxStorageBufferBindingSize = fits([1 << 30, 1 << 27], limits.maxStorageBufferBindingSize);
  if (maxBufferSize === undefined || maxStorageBufferBindingSize === undefined) {
    throw new WebGPUUnavailableError("This GPU's WebGPU buffers are too small for the model runtime.", {
      tip: "Use a browser and GPU with at least 256 MB WebGPU buffers.",
    });
  }
  /** @type {Record<string, number>} */
  const requiredLimits = {
    maxBufferSize,
    maxStorageBufferBindingSize,
    maxComputeWorkgroupStorageSize: 32 << 10,
    maxStorageBuffersPerShaderStage: 10,
  };
  const invocations = fits([1024, 512, 256], limits.maxComputeInvocationsPerWorkgroup);
  if (invocations !== undefined) requiredLimits.maxComputeInvocationsPerWorkgroup = invocations;
  const requiredFeatures = ["shader-f16", "subgroups", "timestamp-query"].filter((f) => adapter.features.has(f));
  return { requiredLimits, requiredFeatures };
}

export class ModelPipeline {
  /**
   * @param {object} args
   * @param {import("./config.js").Variant} args.record  absolute URLs
   * @param {GpuInfo} args.gpu
   * @param {(p: LoadProgress) => void} [args.onProgress]
   * @param {AbortSignal} [args.signal]
   * @param {"cache" | "indexeddb" | "none"} [args.cacheType]  where weights are kept between visits
   * @returns {Promise<ModelPipeline>}
   */
  static async load({ record, gpu, onProgress = () => {}, signal, cacheType = "cache" }) {
    const tvmjs = await loadTvmjs();

    // Shards, index and library go through one artifact cache: each file is checked against the manifest's
    // sha256 when downloaded and when read back from storage (cache.js), whatever the storage.
    const files = variantFiles(record, cacheType);

    // 1. The model library: a wasm module whose imports the tvmjs WASI polyfill provides.
    onProgress({ phase: "library", loaded: 0, total: 0, text: "Fetching the model library" });
    const wasm = new Uint8Array(await files.fetchWithCache(record.model_lib, "arraybuffer", signal));
    onProgress({ phase: "library", loaded: wasm.byteLength, total: wasm.byteLength, text: "Model library fetched" });
    let tvm;
    try {
      tvm = await tvmjs.instantiate(wasm, tvmjs.createPolyfillWASI(), (/** @type {string} */ msg) => console.log(msg));
    } catch (err) {
      throw new ModelLoadError(`The model library ${record.model_lib} could not be instantiated: ${errorText(err)}`, {
        cause: err,
        tip: "Rebuild it with `webbuild package`; it must be linked against the TVM web runtime of tvmjs 0.27.",
      });
    }

    try {
      const shim = new DeviceShim(gpu.device);
      tvm.initWebGPU(shim);
      const pipeline = new ModelPipeline(tvm, gpu, shim);

      // 2. Weights: tvmjs fetches tensor-cache.json (or a WebLLM folder's ndarray-cache.json) and its shards
      // (through a cache), then copies each tensor to the GPU. Its progress callback reports a fraction; we
      // report bytes.
      const index = await fetchTensorCacheIndex(files, record.model_url, signal);
      const totalBytes = (index.records ?? []).reduce(
        (/** @type {number} */ n, /** @type {any} */ r) => n + r.nbytes,
        0,
      );
      let phase = "download";
      tvm.registerInitProgressCallback((/** @type {{progress: number, text: string}} */ report) => {
        if (report.text.startsWith("Loading model from cache")) phase = "weights";
        if (report.text.startsWith("Loading GPU shader")) phase = "shaders";
        const isBytes = phase !== "shaders";
        onProgress({
          phase,
          loaded: isBytes ? Math.round(report.progress * totalBytes) : report.progress,
          total: isBytes ? totalBytes : 1,
          text: report.text,
        });
      });
      await tvm.fetchTensorCache(record.model_url, tvm.webgpu(), { artifactCache: files, signal });

      // 3. VM functions, parameters (in the order _metadata lists), KV cache.
      pipeline.init(record);

      // 4. Compile every WGSL kernel now (async) rather than on first use, with progress.
      phase = "shaders";
      await tvm.asyncLoadWebGPUPipelines(pipeline.vm.getInternalModule());
      onProgress({ phase: "ready", loaded: totalBytes, total: totalBytes, text: "Model ready" });
      return pipeline;
    } catch (err) {
      tvm.dispose();
      if (err instanceof ModelLoadError) throw err;
      throw new ModelLoadError(`Loading model "${record.id}" failed: ${errorText(err)}`, { cause: err });
    }
  }

  /**
   * @param {any} tvm  tvmjs Instance
   * @param {GpuInfo} gpu
   * @param {DeviceShim} shim  the wrapped device tvmjs draws on
   */
  constructor(tvm, gpu, shim) {
    this.tvm = tvm;
    this.gpu = gpu;
    this.shim = shim;
    this.profiler = new Profiler(gpu.device, shim);
    /** @type {StepTiming} */ this.timing = { encode: 0, sample: 0, wait: 0, read: 0, readBytes: 0 };
    /** @type {GpuSampler | null} the library's sampling kernels; null when it has none */
    this.sampler = null;
    /** whether requests may sample on the GPU (the profile turns it off to measure the difference) */
    this.gpuSampling = true;
    this.device = tvm.webgpu();
    this.lost = false;
    gpu.device.lost.then(() => {
      this.lost = true;
    });
    /** @type {any} */ this.logitsOnCPU = null;
    /** @type {any} token ids in, on the GPU: prefill_chunk_size int32, viewed at each call's length */
    this.inputIds = null;
    this.contextWindowSize = 0;
    this.prefillChunkSize = 0;
    this.vocabSize = 0;
    /** @type {Record<string, any>} */ this.metadata = {};
    /** @type {any} batch_verify, looked up on first use (libraries built before scoring existed lack it) */
    this.fVerify = undefined;
    /** @type {any} */ this.fKvPopN = null;
    /** @type {any} */ this.fKvPositions = null;
    /** @type {any} tvmjs's WebGPU context (its flushCommands submits what tvmjs has encoded) */
    this.gpuContext = null;
    /** @type {TapeBook | null} recorded decode steps (step_tape.js); null when the runtime cannot replay */
    this.tapes = null;
    /** whether decode steps may be replayed (the profile turns it off to measure the difference) */
    this.replaySteps = true;
    /** @type {any} the last decode step's logits, [1, 1, vocab] on the GPU: a buffer no VM call lends */
    this.stepLogits = null;
  }

  /** @param {import("./config.js").Variant} record */
  init(record) {
    const tvm = this.tvm;
    tvm.beginScope();
    try {
      this.vm = tvm.detachFromCurrentScope(tvm.createVirtualMachine(this.device));
      const fn = (/** @type {string} */ name) => tvm.detachFromCurrentScope(this.vm.getFunction(name));
      this.fEmbed = fn("embed");
      this.fPrefill = fn("prefill");
      // Libraries fold each layer's norms and activations into its projections for GPUs; on a software
      // adapter the unfolded kernels run faster, and newer libraries keep them as decode_fallback.
      const fallback = this.gpu.info.isFallbackAdapter ? this.optionalFunction("decode_fallback") : null;
      this.fDecode = fallback ?? fn("decode");
      const global = (/** @type {string} */ name) => tvm.detachFromCurrentScope(tvm.getGlobalFunc(name));
      this.fKvClear = global("vm.builtin.kv_state_clear");
      this.fKvAddSeq = global("vm.builtin.kv_state_add_sequence");
      try {
        this.fKvPopN = global("vm.builtin.kv_state_popn");
      } catch {
        // A runtime without it: hide popN, and the engine prefills the prompt again for each choice.
        /** @type {any} */ (this).popN = undefined;
      }
      this.fKvBegin = global("vm.builtin.kv_state_begin_forward");
      this.fKvEnd = global("vm.builtin.kv_state_end_forward");
      // Asking the KV cache for its query positions makes it upload its page tables and positions then,
      // rather than inside the first attention call: what lets a decode step be replayed (step_tape.js).
      try {
        this.fKvPositions = global("vm.builtin.attention_kv_cache_get_query_positions");
        this.gpuContext = tvm.lib.webGPUContext;
        if (typeof this.gpuContext?.flushCommands === "function") {
          const tapes = new TapeBook();
          this.shim.onForget = (id) => tapes.forgetBuffer(id);
          this.tapes = tapes;
        }
      } catch {
        // a runtime without it: every step goes through the VM
      }

      const raw = this.vm.getFunction("_metadata")();
      this.metadata = JSON.parse(typeof raw === "string" ? raw : raw.toString());
      const names = this.metadata.params.map((/** @type {{name: string}} */ p) => p.name);
      try {
        this.params = tvm.detachFromCurrentScope(tvm.getParamsFromCacheByName(names));
      } catch (err) {
        throw new ModelLoadError(
          `The weights do not match the model library (${errorText(err)}); were they built together?`,
          { cause: err, tip: "Re-run `webbuild package` so weights and library come from one build." },
        );
      }
      this.contextWindowSize = this.metadata.context_window_size ?? record.context_window_size ?? 0;
      this.prefillChunkSize = this.metadata.prefill_chunk_size ?? 0;
      if (!(this.contextWindowSize > 0) || !(this.prefillChunkSize > 0)) {
        throw new ModelLoadError("The model library's _metadata lacks context_window_size/prefill_chunk_size.");
      }
      const shape = (/** @type {number} */ n) => tvm.makeShapeTuple([n]);
      this.kvCache = tvm.detachFromCurrentScope(
        this.vm.getFunction("create_tir_paged_kv_cache")(
          shape(1), // max_batch_size: one sequence
          shape(this.contextWindowSize), // max_total_seq_len
          shape(this.prefillChunkSize),
          shape(PAGE_SIZE),
          shape(0), // support_sliding_window
        ),
      );
      this.inputIds = tvm.detachFromCurrentScope(tvm.empty([this.prefillChunkSize], "int32", this.device));
      this.sampler = GpuSampler.fromLibrary(tvm, this.vm, this.device, tvm.lib.webGPUContext);
    } finally {
      tvm.endScope();
    }
    this.reset();
  }

  /**
   * A VM function the library may lack, detached; null when absent.
   * @param {string} name
   */
  optionalFunction(name) {
    this.tvm.beginScope();
    try {
      return this.tvm.detachFromCurrentScope(this.vm.getFunction(name));
    } catch {
      return null;
    } finally {
      this.tvm.endScope();
    }
  }

  /** Empties the KV cache and opens sequence 0 (the only one). */
  reset() {
    this.tvm.beginScope();
    try {
      this.fKvClear(this.kvCache);
      this.fKvAddSeq(this.kvCache, this.tvm.scalar(0, "int64"));
    } finally {
      this.tvm.endScope();
    }
  }

  /**
   * Drops the last `n` tokens of the sequence (their KV pages go back to the pool), so that generation can
   * go on from an earlier point: a request's next choice from the end of the prompt. Bookkeeping only; no
   * kernel runs.
   * @param {number} n
   */
  popN(n) {
    if (n <= 0) return;
    this.tvm.beginScope();
    try {
      // Plain JS numbers cross as floats; PopN(seq_id: int64, n: int32) wants integers.
      this.fKvPopN(this.kvCache, this.tvm.scalar(0, "int64"), this.tvm.scalar(n, "int32"));
    } finally {
      this.tvm.endScope();
    }
  }

  /**
   * Appends tokens to the sequence in chunks of at most prefill_chunk_size.
   * @param {ArrayLike<number>} ids
   * @returns {Promise<Float32Array>} logits after the last token
   */
  async prefill(ids) {
    this.prefillChunks(ids, (logits) => this.queueLogitsRead(logits));
    return this.readLogits();
  }

  /**
   * @param {number} id  one token
   * @returns {Promise<Float32Array>}
   */
  async decode(id) {
    this.step(() => this.decodeLogits(id), (logits) => this.queueLogitsRead(logits));
    return this.readLogits();
  }

  /**
   * Whether `prefillToken`/`decodeToken` can choose the next token for these sampling settings on the GPU:
   * the library has the kernels, and the request wants no logprobs and no nucleus truncation (top_p < 1
   * and logprobs are computed from the logits on the CPU); a grammar-constrained request also needs the
   * library's apply_bitmask_inplace.
   * @param {{temperature: number, top_p?: number, logprobs?: boolean | number | null}} params
   * @param {boolean} [constrained]
   */
  canSampleOnGpu(params, constrained = false) {
    return Boolean(
      this.sampler &&
        this.gpuSampling &&
        !params.logprobs &&
        (params.temperature <= 0 || (params.top_p ?? 1) >= 1) &&
        (!constrained || this.sampler.fns.bitmask),
    );
  }

  /**
   * prefill, then the next token chosen on the GPU (see canSampleOnGpu): one token id comes back.
   * @param {ArrayLike<number>} ids
   * @param {import("./sampling.js").Draw} draw
   * @returns {Promise<number>}
   */
  async prefillToken(ids, draw) {
    this.prefillChunks(ids, (logits) => this.queueTokenRead(logits, draw));
    return this.readToken();
  }

  /**
   * @param {number} id
   * @param {import("./sampling.js").Draw} draw
   * @returns {Promise<number>}
   */
  async decodeToken(id, draw) {
    this.step(() => this.decodeLogits(id), (logits) => this.queueTokenRead(logits, draw));
    return this.readToken();
  }

  /**
   * A decode step whose input is the token the last step chose on the GPU (prefillToken, decodeToken or
   * this), copied there on the GPU: the step is sent at once, before that token is read back, so the GPU
   * has the next step queued while the caller looks at the last token. The next token is chosen on the GPU
   * as in decodeToken.
   * @param {import("./sampling.js").Draw} draw
   * @returns {Promise<number>} the token this step chooses
   */
  decodeChosen(draw) {
    this.step(() => this.decodeLogits(null), (logits) => this.queueTokenRead(logits, draw));
    return this.readToken();
  }

  /**
   * Runs prefill chunk by chunk; `onLast` queues the read of the last chunk's logits.
   * @param {ArrayLike<number>} ids
   * @param {(logits: any) => void} onLast
   */
  prefillChunks(ids, onLast) {
    if (ids.length === 0) throw new Error("prefill needs at least one token");
    const t0 = nowMs();
    for (let start = 0; start < ids.length; start += this.prefillChunkSize) {
      const chunk = Array.prototype.slice.call(ids, start, start + this.prefillChunkSize);
      const last = start + chunk.length >= ids.length;
      this.step(() => this.run(this.fPrefill, chunk).get(0), last ? onLast : null);
    }
    this.timing.encode = nowMs() - t0 - this.timing.sample;
  }

  /**
   * Teacher-forced scoring: appends `ids` to the sequence with batch_verify, which returns the logits at
   * every position in one pass, in chunks of at most prefill_chunk_size tokens (the KV cache's limit per
   * call). Each chunk's logits reach `onChunk` as `count` rows of vocab_size floats, row r being the
   * prediction after token `start + r`.
   * @param {ArrayLike<number>} ids
   * @param {(logits: Float32Array, start: number, count: number) => void} onChunk
   */
  async verify(ids, onChunk) {
    if (this.fVerify === undefined) this.fVerify = this.optionalFunction("batch_verify");
    if (!this.fVerify) {
      throw new ModelLoadError("This model library has no batch_verify function, so it cannot score tokens.", {
        tip: "Rebuild the site with a current `webbuild package`.",
      });
    }
    const size = Math.min(this.prefillChunkSize, VERIFY_CHUNK);
    for (let start = 0; start < ids.length; start += size) {
      const chunk = Array.prototype.slice.call(ids, start, start + size);
      const onCPU = this.verifyChunk(chunk);
      try {
        await this.device.sync();
        if (this.lost) throw new DeviceLostError("The WebGPU device was lost.", { tip: "Reload the model." });
        onChunk(/** @type {Float32Array} */ (onCPU.toArray()), start, chunk.length);
      } finally {
        onCPU.dispose();
      }
    }
  }

  /**
   * batch_verify on one chunk; returns a detached CPU tensor [1, n, vocab] that holds the logits once the
   * device has synced (the caller disposes it).
   * @param {number[]} ids
   */
  verifyChunk(ids) {
    const tvm = this.tvm;
    tvm.beginScope();
    try {
      const logits = this.run(this.fVerify, ids).get(0);
      return tvm.detachFromCurrentScope(tvm.empty(logits.shape, logits.dtype, tvm.cpu())).copyFrom(logits);
    } finally {
      tvm.endScope();
    }
  }

  /**
   * Embeds the ids and runs `fn` (prefill, decode or batch_verify) on the KV cache; call inside a scope.
   * @param {any} fn
   * @param {number[] | null} ids  null: the token the sampler last chose, on the GPU
   * @returns {any} the VM's (logits, kv_cache) tuple
   */
  run(fn, ids) {
    const input = this.inputOf(ids);
    this.beginForward(input.shape[0]);
    const out = this.forward(fn, input);
    this.fKvEnd(this.kvCache);
    return out;
  }

  /**
   * The ids in the input buffer on the GPU; call inside a scope. `null` copies the token the sampler last
   * chose there on the GPU, ordered after the step that chose it.
   * @param {ArrayLike<number> | null} ids
   */
  inputOf(ids) {
    if (this.lost) throw new DeviceLostError("The WebGPU device was lost.", { tip: "Reload the model." });
    // A view of one persistent buffer: no GPU buffer made and destroyed per step.
    if (ids === null) return this.inputIds.view([1]).copyFrom(/** @type {GpuSampler} */ (this.sampler).chosen);
    return this.inputIds.view([ids.length]).copyFrom(Int32Array.from(ids));
  }

  /**
   * Opens a forward pass of `length` tokens on sequence 0 of the KV cache.
   * @param {number} length
   */
  beginForward(length) {
    this.fKvBegin(this.kvCache, this.tvm.makeShapeTuple([0]), this.tvm.makeShapeTuple([length]));
  }

  /**
   * Embeds the ids on the GPU and runs `fn` on the KV cache (between the caller's begin and end of forward).
   * @param {any} fn
   * @param {any} input  the ids on the GPU
   * @returns {any} the VM's (logits, kv_cache) tuple
   */
  forward(fn, input) {
    const embed = this.fEmbed(input, this.params);
    const hidden = embed.shape[embed.shape.length - 1];
    return fn(embed.view([1, input.shape[0], hidden]), this.kvCache, this.params);
  }

  /**
   * One decode step's logits ([1, 1, vocab] on the GPU): the library's decode run by the VM, or, once two VM
   * steps of this KV cache shape recorded the same commands, their replay (step_tape.js). Either way they
   * land in `stepLogits`. Call inside a scope.
   * @param {number | null} id  null: the token the sampler last chose, on the GPU
   */
  decodeLogits(id) {
    const { shim, tapes, tvm } = this;
    const ids = id === null ? null : [id];
    if (!tapes || !this.replaySteps || !shim.reuse || shim.timer) return this.run(this.fDecode, ids).get(0);
    const input = this.inputOf(ids);
    this.beginForward(1);
    const key = shim.uploadsOf(() => this.fKvPositions(this.kvCache));
    this.gpuContext.flushCommands(); // nothing of tvmjs's is pending: the step starts on an empty slate
    const tape = tapes.trusted(key);
    if (tape) {
      replay(shim, tape);
    } else {
      const record = tapes.wants(key);
      if (record) shim.record();
      try {
        const logits = this.forward(this.fDecode, input).get(0);
        this.stepLogits ??= tvm.detachFromCurrentScope(tvm.empty(logits.shape, logits.dtype, this.device));
        this.stepLogits.copyFrom(logits);
        this.gpuContext.flushCommands();
        if (record) tapes.offer(key, shim.stopRecording());
      } finally {
        shim.tape = null; // a step that failed is not offered
      }
    }
    this.fKvEnd(this.kvCache);
    return this.stepLogits;
  }

  /**
   * One forward pass and what follows it (queueing the read of the logits, or the sampling kernels and the
   * read of a token id). All temporaries die at endScope().
   * @param {() => any} logitsOf  runs the model; returns the logits on the GPU
   * @param {((logits: any) => void) | null} then
   */
  step(logitsOf, then) {
    const tvm = this.tvm;
    const t0 = nowMs();
    this.timing.sample = 0;
    tvm.beginScope();
    try {
      const logits = logitsOf();
      if (then) then(logits);
    } finally {
      tvm.endScope();
    }
    this.timing.encode = nowMs() - t0 - this.timing.sample;
  }

  /** @param {any} logits  [1, 1, vocab] on the GPU */
  queueLogitsRead(logits) {
    const tvm = this.tvm;
    if (this.logitsOnCPU === null) {
      this.logitsOnCPU = tvm.detachFromCurrentScope(tvm.empty(logits.shape, logits.dtype, tvm.cpu()));
      this.vocabSize = logits.shape[logits.shape.length - 1];
    }
    this.logitsOnCPU.copyFrom(logits);
  }

  /**
   * @param {any} logits  [1, 1, vocab] on the GPU
   * @param {import("./sampling.js").Draw} draw
   */
  queueTokenRead(logits, draw) {
    const t0 = nowMs();
    this.vocabSize = logits.shape[logits.shape.length - 1];
    /** @type {GpuSampler} */ (this.sampler).queue(logits, draw);
    this.timing.sample = nowMs() - t0;
  }

  /** @returns {Promise<Float32Array>} a copy of the last logits (float32 [vocab]) */
  async readLogits() {
    const t0 = nowMs();
    await this.device.sync();
    const t1 = nowMs();
    if (this.lost) throw new DeviceLostError("The WebGPU device was lost.", { tip: "Reload the model." });
    const logits = /** @type {Float32Array} */ (this.logitsOnCPU.toArray()); // toArray() copies out of wasm memory
    Object.assign(this.timing, { wait: t1 - t0, read: nowMs() - t1, readBytes: logits.byteLength });
    return logits;
  }

  /** @returns {Promise<number>} the token the sampling kernels chose (the read waits for no later step) */
  async readToken() {
    const t0 = nowMs();
    const token = await /** @type {GpuSampler} */ (this.sampler).read();
    if (this.lost) throw new DeviceLostError("The WebGPU device was lost.", { tip: "Reload the model." });
    Object.assign(this.timing, { wait: nowMs() - t0, read: 0, readBytes: 4 });
    return token;
  }

  dispose() {
    this.sampler?.dispose();
    this.profiler.dispose();
    for (const obj of [
      this.stepLogits,
      this.fKvPositions,
      this.logitsOnCPU,
      this.inputIds,
      this.kvCache,
      this.params,
      this.fEmbed,
      this.fPrefill,
      this.fDecode,
      this.fVerify,
      this.fKvClear,
      this.fKvAddSeq,
      this.fKvPopN,
      this.fKvBegin,
      this.fKvEnd,
      this.vm,
    ]) {
      try {
        obj?.dispose();
      } catch {
        // already freed with a lost device
      }
    }
    this.tvm.dispose();
  }
}
