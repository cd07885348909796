// One request's generation: prefill the prompt (only the part the KV cache does not already hold, see
// sequence.js: a chat's next turn reuses the previous turn's cache), then for each of its n choices sample /
// detokenize / check stops / decode until a stop token, a stop string, max_tokens, the end of the context
// window, or an interrupt. Tokens are chosen from logits on the CPU (sampler.js), or on the GPU when the
// pipeline can (sampling.js: no logprobs, top_p = 1), drawing the same numbers from the same seeded
// generator. Choices run one after another on the KV cache's one sequence: when the pipeline can pop tokens
// (popN), a choice's tokens are popped and the next choice starts from the prompt's KV and logits; otherwise
// the prompt is prefilled again. A request's grammar (grammar.js: response_format, tool calls) gives each
// choice a matcher whose bitmask masks every token's logits (on the GPU with the draw, else on the CPU after
// the penalties) and which accepts each token chosen, the stop token aside. Yields text deltas tagged with their
// choice (and logprobs when asked for); fills in the usage (with timings and the prompt tokens found in the
// cache) when done.

import { AbortError, WebbuildError } from "./errors.js";
import { makeUsage } from "./openai.js";
import { IncrementalDecoder } from "./tokenizer.js";
import { StopStringFilter } from "./stop.js";
import { LogprobTracker } from "./logprobs.js";
import { applyPenalties, choiceSeed, createRng, drawToken, randomSeed } from "./sampler.js";
import { drawFor } from "./sampling.js";
import { maskLogits } from "./grammar.js";

/**
 * @typedef {object} GenerationModel  what one generation needs from the engine
 * @property {import("./model.js").Pipeline} pipeline  for its limits and sampling abilities
 * @property {import("./sequence.js").KvSequence} sequence  feeds the pipeline, tracking its KV cache
 * @property {import("./tokenizer.js").TextTokenizer} tokenizer
 * @property {Set<number>} stopIds  token ids that end generation (EOS, end of turn)
 * @property {() => boolean} interrupted  polled between tokens
 * @property {<T>(fn: () => Promise<T>) => Promise<T>} guard  runs a pipeline call, turning failures into typed errors
 */

/**
 * @typedef {object} ChoiceDelta  what generateChoices yields, choice after choice
 * @property {number} index  the choice, 0..n-1
 * @property {string} text  the choice's new text (may be empty when only logprobs, or the finish, come)
 * @property {import("./logprobs.js").TokenLogprob[] | null} logprobs  entries of the tokens whose text
 *   `text` completes; null unless the request asked for logprobs
 * @property {string | null} finishReason  "stop" | "length" | "abort" on the choice's last delta (with
 *   empty text), null before
 */

/**
 * @typedef {object} GenerationResult
 * @property {import("./openai.js").Usage} usage  the prompt counted once, the tokens of every choice summed
 */

/**
 * @typedef {object} GenerationStats
 * @property {number} prefillSeconds
 * @property {number} prefillTokens  prompt tokens run through the model (not those reused from the cache)
 * @property {number | null} cachedTokens  prompt tokens the first prefill found in the KV cache
 * @property {number} decodeSeconds
 * @property {number} decodeSteps
 * @property {number} firstToken  when the first token was sampled (0 until then)
 * @property {number} generated  tokens sampled, stop tokens included
 */

/** @returns {number} seconds, monotonic */
const now = () => performance.now() / 1000;

/**
 * @param {GenerationModel} model
 * @param {number[]} promptIds
 * @param {import("./openai.js").GenerationParams} params
 * @param {string[]} stops
 * @param {AbortSignal | undefined} signal
 * @param {GenerationResult} result
 * @param {import("./grammar.js").Constraint | null} [constraint]  what every choice's output must follow
 * @returns {AsyncGenerator<ChoiceDelta>}
 */
export async function* generateChoices(model, promptIds, params, stops, signal, result, constraint = null) {
  const { pipeline } = model;
  const n = params.n ?? 1;
  const maxNew = params.max_tokens ?? pipeline.contextWindowSize - promptIds.length;
  const seed = params.seed ?? randomSeed();
  const { sequence } = model;
  const reuse = n > 1 && sequence.canPop;
  const gpu = pipeline.canSampleOnGpu?.(params, constraint !== null) ?? false;
  /** @type {GenerationStats} */
  const stats = {
    prefillSeconds: 0,
    prefillTokens: 0,
    cachedTokens: null,
    decodeSeconds: 0,
    decodeSteps: 0,
    firstToken: 0,
    generated: 0,
  };
  /** @param {import("./sampling.js").Draw | null} draw  the first token is chosen on the GPU with it */
  const prefill = async (draw) => {
    const t = now();
    const { out, cached, prefilled } = await model.guard(() => sequence.prefill(promptIds, draw));
    stats.prefillSeconds += now() - t;
    stats.prefillTokens += prefilled;
    stats.cachedTokens ??= cached;
    return out;
  };

  const t0 = now();
  // A prompt whose KV cache the choices share (reuse) is read back once; otherwise, on the GPU path, each
  // choice's prefill ends in its first token.
  const firstOnGpu = gpu && !reuse;
  let promptLogits = firstOnGpu ? null : /** @type {Float32Array} */ (await prefill(null));
  let appended = 0; // tokens the last choice added to the KV cache after the prompt
  for (let index = 0; index < n; index++) {
    const rng = createRng(choiceSeed(seed, index));
    const matcher = constraint ? await constraint.matcher() : null;
    /** @type {(counts: Map<number, number>) => Promise<Float32Array | number>} */
    let first;
    if (firstOnGpu) {
      first = async (counts) => prefill(await drawWith(matcher, drawFor(params, counts, rng)));
    } else {
      // After an interrupt the remaining choices finish at once ("abort"), without touching the GPU.
      if (index > 0 && !model.interrupted()) {
        if (reuse) {
          const popped = appended;
          await model.guard(() => sequence.popN(popped));
        } else {
          promptLogits = /** @type {Float32Array} */ (await prefill(null));
        }
      }
      // Sampling adds bias and penalties to the logits in place: a reused prompt's logits are copied.
      const logits = reuse ? Float32Array.from(/** @type {Float32Array} */ (promptLogits)) : promptLogits;
      first = async () => /** @type {Float32Array} */ (logits);
    }
    try {
      appended = yield* generateChoice(model, index, first, gpu, maxNew, params, stops, signal, rng, stats, matcher);
    } finally {
      matcher?.dispose();
    }
  }

  const extra = {
    prefill_tokens_per_s: stats.prefillSeconds > 0 ? stats.prefillTokens / stats.prefillSeconds : 0,
    decode_tokens_per_s: stats.decodeSeconds > 0 ? stats.decodeSteps / stats.decodeSeconds : 0,
    time_to_first_token_s: stats.firstToken > 0 ? stats.firstToken - t0 : 0,
    prefill_seconds: stats.prefillSeconds,
    decode_seconds: stats.decodeSeconds,
    e2e_seconds: now() - t0,
    cached_tokens: stats.cachedTokens ?? 0,
    prefill_tokens: stats.prefillTokens,
  };
  result.usage = makeUsage(promptIds.length, stats.generated, extra, stats.cachedTokens ?? 0);
}

/**
 * One choice, from the prompt: `first` gives the logits after it (modified in place), or the first token
 * when it was chosen on the GPU. Later tokens come from the GPU when `gpu`. Returns how many tokens the
 * choice added to the KV cache.
 * @param {GenerationModel} model
 * @param {number} index
 * @param {(counts: Map<number, number>) => Promise<Float32Array | number>} first
 * @param {boolean} gpu
 * @param {number} maxNew
 * @param {import("./openai.js").GenerationParams} params
 * @param {string[]} stops
 * @param {AbortSignal | undefined} signal
 * @param {() => number} rng
 * @param {GenerationStats} stats  added to
 * @param {import("./grammar.js").Matcher | null} matcher  the choice's place in the request's grammar
 * @returns {AsyncGenerator<ChoiceDelta, number>}
 */
async function* generateChoice(model, index, first, gpu, maxNew, params, stops, signal, rng, stats, matcher) {
  const { sequence, tokenizer } = model;
  const decoder = new IncrementalDecoder(tokenizer);
  const filter = new StopStringFilter(stops);
  const tracker = params.logprobs ? new LogprobTracker(tokenizer, params.top_logprobs ?? 0) : null;
  /** @type {Map<number, number>} */
  const counts = new Map();
  const delta = (/** @type {string} */ text, /** @type {import("./logprobs.js").TokenLogprob[] | null} */ entries) => ({
    index,
    text,
    logprobs: entries,
    finishReason: null,
  });

  // Without penalties or a grammar a token's draw does not depend on the token before it, so each decode
  // step is sent one step early, its input being the token the step before chose, still on the GPU
  // (sequence.decodeChosen): the GPU runs it while that token is read back and handed on.
  const penalized = Boolean(params.presence_penalty || params.frequency_penalty);
  const chain = gpu && !matcher && !penalized && sequence.canChain && sequence.canPop;
  /** @type {Promise<number> | null} the step sent with the latest token as its input, not awaited yet */
  let ahead = null;
  /** @type {number[]} the inputs of the chained steps awaited so far, for sequence.settle */
  const chained = [];
  let known = 0; // when it became known (chained: decode time is the time between tokens)

  let generated = 0;
  let appended = 0;
  let finish = "length";
  /** @type {Float32Array | number | null} logits to sample from on the CPU, or a token chosen on the GPU */
  let next = null;
  try {
    while (generated < maxNew) {
      if (signal?.aborted) throw signal.reason instanceof WebbuildError ? signal.reason : new AbortError("Aborted.");
      if (model.interrupted()) {
        finish = "abort";
        break;
      }
      if (next === null) {
        next = await first(counts);
        known = now();
      }
      const logits = typeof next === "number" ? null : next;
      if (logits) applyPenalties(logits, params, counts);
      if (logits && matcher) maskLogits(logits, await matcher.bitmask());
      const token = logits ? drawToken(logits, params, rng) : /** @type {number} */ (next);
      generated++;
      if (stats.firstToken === 0) stats.firstToken = now();
      if (model.stopIds.has(token)) {
        finish = "stop";
        break;
      }
      matcher?.accept(token);
      counts.set(token, (counts.get(token) ?? 0) + 1);
      if (logits) tracker?.add(logits, token); // requests with logprobs always sample on the CPU
      const text = decoder.push(token);
      tracker?.decodedText(text.length);
      const piece = filter.push(text);
      const n = piece.text.length;
      const entries = tracker ? (piece.stopped ? tracker.finish(n, true) : tracker.release(n)) : null;
      if (piece.text || entries?.length) yield delta(piece.text, entries);
      if (piece.stopped) {
        finish = "stop";
        break;
      }
      if (generated >= maxNew) break;
      if (chain && typeof next === "number") {
        // This token's step (sent a step early, or now), then the one after it, before waiting for the first.
        const current = ahead ?? model.guard(() => sequence.decodeChosen(drawFor(params, counts, rng)));
        ahead = generated + 2 <= maxNew ? model.guard(() => sequence.decodeChosen(drawFor(params, counts, rng))) : null;
        next = await current;
        chained.push(token);
        stats.decodeSeconds += now() - known;
        known = now();
      } else {
        const t = now();
        const last = token;
        const draw = gpu ? await drawWith(matcher, drawFor(params, counts, rng)) : null;
        next = await model.guard(() => sequence.decode(last, draw));
        stats.decodeSeconds += now() - t;
      }
      stats.decodeSteps++;
      appended++;
    }
  } finally {
    if (ahead) {
      // The step sent with the last token as its input although generation ended there: taken back.
      const surplus = ahead;
      ahead = null;
      const ran = await surplus.then(
        () => true,
        () => false,
      );
      if (ran) {
        if (typeof next === "number") chained.push(next);
        sequence.settle(chained);
        await model.guard(() => sequence.popN(1));
      } else {
        sequence.forget();
      }
    } else if (chain) {
      sequence.settle(chained);
    }
  }
  if (!filter.stopped) {
    const flushed = decoder.flush();
    tracker?.decodedText(flushed.length);
    const tail = filter.push(flushed).text + filter.flush();
    if (filter.stopped) finish = "stop";
    const entries = tracker ? tracker.finish(tail.length, filter.stopped) : null;
    if (tail || entries?.length) yield delta(tail, entries);
  }
  stats.generated += generated;
  yield { index, text: "", logprobs: null, finishReason: finish };
  return appended;
}

/**
 * `draw` with the bitmask of the tokens the grammar allows next, when there is a grammar.
 * @param {import("./grammar.js").Matcher | null} matcher
 * @param {import("./sampling.js").Draw} draw
 * @returns {Promise<import("./sampling.js").Draw>}
 */
async function drawWith(matcher, draw) {
  if (matcher) draw.bitmask = await matcher.bitmask();
  return draw;
}
