// Test helpers (not a test): an in-memory port pair, fixtures, a scripted fake pipeline.
import { readFileSync } from "node:fs";

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
