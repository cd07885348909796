// Token sampling on the CPU from one position's logits. Greedy at temperature 0; otherwise softmax at the
// temperature, nucleus (top_p) truncation, and a draw from a seeded PRNG, so the same seed over the same
// logits gives the same tokens. OpenAI's logit_bias and presence/frequency penalties apply first.
// Log-probabilities (OpenAI's logprobs) are the log-softmax of the logits after bias and penalties and
// before temperature/top_p: they describe the model's distribution, whatever the sampling settings.

/**
 * @typedef {object} SamplingParams
 * @property {number} temperature  0 = greedy
 * @property {number} top_p  in (0, 1]
 * @property {number} [presence_penalty]  subtracted once from every token already generated
 * @property {number} [frequency_penalty]  subtracted per occurrence of a token already generated
 * @property {Record<string, number> | null} [logit_bias]  token id -> bias added to its logit
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

/**
 * The seed of choice `index` of a request with n choices: choice 0 keeps the request's seed (n = 1 samples
 * as before); the others get a hashed one. Hashing matters: mulberry32 seeds that differ by a multiple of
 * its increment give the same stream shifted by a few draws, so seed + index would make choices overlap.
 * @param {number} seed  the request's seed (any integer)
 * @param {number} index  0-based choice index
 * @returns {number} a 32-bit seed for createRng
 */
export function choiceSeed(seed, index) {
  if (index === 0) return seed;
  const base = Number(BigInt.asUintN(32, BigInt(Math.trunc(seed))));
  return fmix32((base + Math.imul(index, 0x9e3779b9)) >>> 0);
}

/**
 * MurmurHash3's 32-bit finalizer: a bijection that spreads every input bit over the output.
 * @param {number} h
 */
function fmix32(h) {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
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
  return drawToken(logits, params, rng);
}

/**
 * Picks the next token from logits that already carry bias and penalties (applyPenalties), so that
 * their log-probabilities can be read in between.
 * @param {Float32Array} logits  read only
 * @param {SamplingParams} params
 * @param {() => number} rng
 * @returns {number}
 */
export function drawToken(logits, params, rng) {
  if (params.temperature <= 0) return argmax(logits);

  const max = logits[argmax(logits)];
  const temperature = params.temperature;
  const probs = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) {
    // Divided, not multiplied by 1 / temperature: at 5e-324 that is Infinity and 0 * Infinity is NaN, while
    // 0 / 5e-324 stays 0, so any temperature > 0 draws from a finite distribution (the argmax at the extreme).
    const p = Math.exp((logits[i] - max) / temperature); // exp(-inf) = 0 for masked tokens
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

/**
 * log(sum(exp(logits))) in float64, shifted by the maximum so that no exp overflows; -Infinity when every
 * logit is -Infinity. NaN logits are ignored.
 * @param {ArrayLike<number>} logits
 * @returns {number}
 */
export function logSumExp(logits) {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  if (max === -Infinity || !Number.isFinite(max)) return max;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i];
    if (v === v) sum += Math.exp(v - max);
  }
  return max + Math.log(sum);
}

/**
 * The k largest logits' indices, best first (lower id first on ties); one pass with a small sorted
 * buffer, as k is at most 20 against vocabularies of tens of thousands.
 * @param {ArrayLike<number>} logits
 * @param {number} k
 * @returns {number[]}
 */
export function topIndices(logits, k) {
  /** @type {number[]} */ const ids = [];
  /** @type {number[]} */ const values = [];
  if (k <= 0) return ids;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i];
    if (v !== v || (ids.length === k && !(v > values[k - 1]))) continue; // NaN, or not better than the k-th
    let at = ids.length === k ? k - 1 : ids.length;
    while (at > 0 && v > values[at - 1]) at--;
    if (ids.length === k) {
      ids.pop();
      values.pop();
    }
    ids.splice(at, 0, i);
    values.splice(at, 0, v);
  }
  return ids;
}

/**
 * Natural-log probabilities of the next token under softmax(logits): the chosen token's and the `topK`
 * most likely ones' (best first). Pass the logits after applyPenalties and before any temperature.
 * @param {ArrayLike<number>} logits
 * @param {number} token
 * @param {number} topK  0..20
 * @returns {{logprob: number, top: {id: number, logprob: number}[]}}
 */
export function tokenLogprobs(logits, token, topK) {
  const lse = logSumExp(logits);
  return {
    logprob: logits[token] - lse,
    top: topIndices(logits, topK).map((id) => ({ id, logprob: logits[id] - lse })),
  };
}

/** @param {Float64Array} probs */
function lastNonZero(probs) {
  for (let i = probs.length - 1; i >= 0; i--) if (probs[i] > 0) return i;
  return 0;
}
