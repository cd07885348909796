// One GPU, one sequence in the KV cache: the engine runs loads, generations and scoring one at a time, in
// call order. A generation holds the lock for as long as its stream is read, so it takes the lock with
// acquire() and releases it when the stream ends; everything else runs a function under it.

export class SerialLock {
  constructor() {
    /** @type {Promise<unknown>} */ this.tail = Promise.resolve();
  }

  /**
   * Runs `fn` once every earlier holder is done; a failure does not block later callers.
   * @template T
   * @param {() => T | Promise<T>} fn
   * @returns {Promise<T>}
   */
  run(fn) {
    const result = this.tail.then(fn);
    this.tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }

  /**
   * Waits for the lock and holds it until the returned function is called.
   * @returns {Promise<() => void>}
   */
  async acquire() {
    /** @type {() => void} */
    let release = () => {};
    const held = new Promise((resolve) => {
      release = () => resolve(undefined);
    });
    const previous = this.tail;
    this.tail = previous.then(() => held);
    await previous;
    return release;
  }
}
