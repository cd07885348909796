// Token sampling on the CPU from one position's logits. Greedy at temperature 0; otherwise softmax at the
// temperature, nucleus (top_p) truncation, and a draw from a seeded PRNG, so the same seed over the same
// logits gives the same tokens. OpenAI's logit_bias and presence/frequency penalties apply first.

/**
 * @typedef {object} SamplingParams
 * @property {number} temperature  0 = greedy
 * @property {number} top_p  in (0, 1]
 * @property {number} [presence_penalty]  subtracted once from every token already generated
 * @property {number} [frequency_penalty]  subtracted per occurrence of a token already generated
 * @property {Record<string, number>} [logit_bias]  token id -> bias added to its logit
 */

/**
 * A small, fast PRNG (mulberry32) with 32-bit state: deterministic across browsers and Node.
 * @param {number} seed  any integer (reduced mod 2^32)
 * @returns {() => number}  uniform floats in [0, 1)
 */
export function createRng(seed) {
  let state = Number(BigInt.asUintN(32, BigInt(Math.trunc(seed)))) >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** @returns {number} a seed for requests that give none */
export function randomSeed() {
  if (globalThis.crypto?.getRandomValues) return globalThis.crypto.getRandomValues(new Uint32Array(1))[0];
  return Math.floor(Math.random() * 2 ** 32);
}

/**
 * Applies logit_bias and presence/frequency penalties in place.
 * @param {Float32Array} logits
 * @param {SamplingParams} params
 * @param {Map<number, number>} [counts]  token id -> times generated so far in this request
 */
export function applyPenalties(logits, params, counts) {
  if (params.logit_bias) {
    for (const [id, bias] of Object.entries(params.logit_bias)) {
      const i = Number(id);
      if (i >= 0 && i < logits.length) logits[i] += bias;
    }
  }
  const presence = params.presence_penalty ?? 0;
  const frequency = params.frequency_penalty ?? 0;
  if (counts && (presence !== 0 || frequency !== 0)) {
    for (const [id, count] of counts) {
      if (id >= 0 && id < logits.length) logits[id] -= presence + frequency * count;
    }
  }
}

/**
 * @param {ArrayLike<number>} logits
 * @returns {number} index of the largest value (lowest index on ties; NaN never wins)
 */
export function argmax(logits) {
  let best = 0;
  let bestValue = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    if (logits[i] > bestValue) {
      bestValue = logits[i];
      best = i;
    }
  }
  return best;
}

/**
 * Picks the next token. `logits` is modified (bias, penalties): pass a copy you do not need.
 * @param {Float32Array} logits
 * @param {SamplingParams} params
 * @param {() => number} rng  from createRng
 * @param {Map<number, number>} [counts]  token id -> times generated so far
 * @returns {number}
 */
export function sampleToken(logits, params, rng, counts) {
  applyPenalties(logits, params, counts);
  if (params.temperature <= 0) return argmax(logits);

  const max = logits[argmax(logits)];
  const invT = 1 / params.temperature;
  const probs = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) {
    const p = Math.exp((logits[i] - max) * invT); // exp(-inf) = 0 for masked tokens
    probs[i] = p;
    sum += p;
  }

  const topP = params.top_p ?? 1;
  if (topP >= 1) {
    // No truncation: inverse CDF in index order; no sort needed.
    let target = rng() * sum;
    for (let i = 0; i < probs.length; i++) {
      target -= probs[i];
      if (target < 0 && probs[i] > 0) return i;
    }
    return lastNonZero(probs);
  }

  // Nucleus: the smallest set of most likely tokens whose mass reaches top_p; ties broken by lower id.
  const order = Uint32Array.from({ length: probs.length }, (_, i) => i);
  order.sort((a, b) => probs[b] - probs[a] || a - b);
  const limit = topP * sum;
  let kept = 0;
  let mass = 0;
  while (kept < order.length && (kept === 0 || mass < limit)) {
    mass += probs[order[kept]];
    kept++;
  }
  let target = rng() * mass;
  for (let k = 0; k < kept; k++) {
    target -= probs[order[k]];
    if (target < 0) return order[k];
  }
  return order[kept - 1];
}

/** @param {Float64Array} probs */
function lastNonZero(probs) {
  for (let i = probs.length - 1; i >= 0; i--) if (probs[i] > 0) return i;
  return 0;
}
