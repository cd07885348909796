// Test helpers (not a test): an in-memory port pair, fixtures, a scripted fake pipeline.
import { readFileSync } from "node:fs";
import { applyPenalties, drawToken } from "../src/sampler.js";
import { maskLogits } from "../src/grammar.js";

/** Two connected ports; messages are structured-cloned and delivered asynchronously, like postMessage. */
export function portPair() {
  const a = new EventTarget();
  const b = new EventTarget();
  const link = (from, to) => {
    from.postMessage = (data) => {
      const copy = structuredClone(data);
      setTimeout(() => to.dispatchEvent(Object.assign(new Event("message"), { data: copy })), 0);
    };
  };
  link(a, b);
  link(b, a);
  return [a, b];
}

export function fixture(name) {
  return JSON.parse(readFileSync(new URL(`./fixtures/${name}`, import.meta.url), "utf8"));
}

/**
 * A pipeline whose logits pick `script` tokens in order (prefill -> script[0], each decode -> next),
 * then `after` forever. Records what it was fed.
 */
export class ScriptedPipeline {
  constructor(script, { vocab = 400, after = 0, contextWindowSize = 64, prefillChunkSize = 8 } = {}) {
    this.script = script;
    this.vocab = vocab;
    this.after = after;
    this.contextWindowSize = contextWindowSize;
    this.prefillChunkSize = prefillChunkSize;
    this.fed = [];
    this.step = 0;
    this.resets = 0;
    this.disposed = false;
  }
  logitsFor(id) {
    const logits = new Float32Array(this.vocab).fill(-10);
    logits[id] = 10;
    return logits;
  }
  next() {
    const id = this.step < this.script.length ? this.script[this.step] : this.after;
    this.step++;
    return this.logitsFor(id);
  }
  reset() {
    this.resets++;
    this.step = 0;
    this.fed = [];
  }
  async prefill(ids) {
    this.fed.push(...ids);
    return this.next();
  }
  async decode(id) {
    this.fed.push(id);
    return this.next();
  }
  dispose() {
    this.disposed = true;
  }
}

/**
 * A pipeline whose logits depend on the whole sequence in its KV cache, as a model's do: noise seeded by a
 * hash of the tokens fed since the last reset. It can pop tokens (popN), unless built with {popN: false}.
 * Counts prefills, records their lengths and the pops.
 */
export class HistoryPipeline {
  constructor({ vocab = 400, contextWindowSize = 64, prefillChunkSize = 8, popN = true, scale = 4 } = {}) {
    Object.assign(this, { vocab, contextWindowSize, prefillChunkSize, scale });
    this.fed = [];
    this.prefills = 0;
    this.prefilled = [];
    this.pops = [];
    this.resets = 0;
    if (!popN) this.popN = undefined;
  }
  logits() {
    let h = 2166136261;
    for (const id of this.fed) h = Math.imul(h ^ id, 16777619) >>> 0;
    const logits = new Float32Array(this.vocab);
    for (let i = 0; i < this.vocab; i++) logits[i] = Math.sin(i * 12.9898 + (h % 100003) * 78.233) * this.scale;
    return logits;
  }
  reset() {
    this.resets++;
    this.fed = [];
  }
  async prefill(ids) {
    this.prefills++;
    this.prefilled.push(ids.length);
    this.fed.push(...ids);
    return this.logits();
  }
  async decode(id) {
    this.fed.push(id);
    return this.logits();
  }
  popN(n) {
    if (n > this.fed.length) throw new Error(`popN(${n}) past the sequence's ${this.fed.length} tokens`);
    this.pops.push(n);
    this.fed.length -= n;
  }
  dispose() {}
}

/**
 * A HistoryPipeline that can also choose tokens "on the GPU" (prefillToken/decodeToken), the way the
 * library's sampling kernels do (sampling.js): bias and penalties, then argmax or the inverse CDF at the
 * draw's uniform number, a grammar's bitmask after them; here computed on the CPU (sampler.js, grammar.js). Counts the choices it made.
 */
export class GpuSamplingPipeline extends HistoryPipeline {
  constructor(options = {}) {
    super(options);
    this.gpuChoices = 0;
    this.chainedSteps = 0;
    this.lastChoice = -1;
  }
  canSampleOnGpu(params) {
    return !params.logprobs && (params.temperature <= 0 || (params.top_p ?? 1) >= 1);
  }
  async prefillToken(ids, draw) {
    return this.choose(await this.prefill(ids), draw);
  }
  async decodeToken(id, draw) {
    return this.choose(await this.decode(id), draw);
  }
  /** Its input is the last choice, as the GPU's queue orders the copy after the step that made it; the
   * choice is made at the call and handed over a task later, like a read-back. */
  decodeChosen(draw) {
    this.chainedSteps++;
    this.fed.push(this.lastChoice);
    const choice = this.choose(this.logits(), draw);
    return new Promise((resolve) => setTimeout(() => resolve(choice), 0));
  }
  choose(logits, draw) {
    this.gpuChoices++;
    const params = { logit_bias: draw.logitBias, presence_penalty: draw.presence, frequency_penalty: draw.frequency };
    applyPenalties(logits, /** @type {any} */ (params), draw.counts);
    if (draw.bitmask) maskLogits(logits, draw.bitmask);
    this.lastChoice = drawToken(logits, { temperature: draw.temperature, top_p: 1 }, () => draw.uniform);
    return this.lastChoice;
  }
}
