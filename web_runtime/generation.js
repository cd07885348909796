// One generation: prefill the prompt, then sample / detokenize / check stops / decode until a stop token,
// a stop string, max_tokens, the end of the context window, or an interrupt. Yields text deltas; fills in
// the finish reason and usage (with timings) when done.

import { AbortError, WebbuildError } from "./errors.js";
import { makeUsage } from "./openai.js";
import { IncrementalDecoder } from "./tokenizer.js";
import { StopStringFilter } from "./stop.js";
import { createRng, randomSeed, sampleToken } from "./sampler.js";

/**
 * @typedef {object} GenerationModel  what one generation needs from the engine
 * @property {import("./engine.js").Pipeline} pipeline
 * @property {import("./tokenizer.js").TextTokenizer} tokenizer
 * @property {Set<number>} stopIds  token ids that end generation (EOS, end of turn)
 * @property {() => boolean} interrupted  polled between tokens
 * @property {<T>(fn: () => Promise<T>) => Promise<T>} guard  runs a pipeline call, turning failures into typed errors
 */

/**
 * @typedef {object} GenerationResult
 * @property {string} finishReason  "stop" | "length" | "abort"
 * @property {import("./openai.js").Usage} usage
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
 * @returns {AsyncGenerator<string>}
 */
export async function* generateText(model, promptIds, params, stops, signal, result) {
  const { pipeline, tokenizer } = model;
  const maxNew = params.max_tokens ?? pipeline.contextWindowSize - promptIds.length;
  const rng = createRng(params.seed ?? randomSeed());
  const decoder = new IncrementalDecoder(tokenizer);
  const filter = new StopStringFilter(stops);
  /** @type {Map<number, number>} */
  const counts = new Map();

  const t0 = now();
  let logits = await model.guard(async () => {
    pipeline.reset();
    return pipeline.prefill(promptIds);
  });
  const tPrefill = now();
  let tFirst = 0;
  let decodeSeconds = 0;
  let decodeSteps = 0;
  let generated = 0;
  let finish = "length";
  while (generated < maxNew) {
    if (signal?.aborted) throw signal.reason instanceof WebbuildError ? signal.reason : new AbortError("Aborted.");
    if (model.interrupted()) {
      finish = "abort";
      break;
    }
    const token = sampleToken(logits, params, rng, counts);
    generated++;
    if (tFirst === 0) tFirst = now();
    if (model.stopIds.has(token)) {
      finish = "stop";
      break;
    }
    counts.set(token, (counts.get(token) ?? 0) + 1);
    const piece = filter.push(decoder.push(token));
    if (piece.text) yield piece.text;
    if (piece.stopped) {
      finish = "stop";
      break;
    }
    if (generated >= maxNew) break;
    const t = now();
    logits = await model.guard(() => pipeline.decode(token));
    decodeSeconds += now() - t;
    decodeSteps++;
  }
  if (!filter.stopped) {
    const tail = filter.push(decoder.flush()).text + filter.flush();
    if (tail) yield tail;
    if (filter.stopped) finish = "stop";
  }

  const prefillSeconds = tPrefill - t0;
  const extra = {
    prefill_tokens_per_s: prefillSeconds > 0 ? promptIds.length / prefillSeconds : 0,
    decode_tokens_per_s: decodeSeconds > 0 ? decodeSteps / decodeSeconds : 0,
    time_to_first_token_s: tFirst > 0 ? tFirst - t0 : 0,
    prefill_seconds: prefillSeconds,
    decode_seconds: decodeSeconds,
    e2e_seconds: now() - t0,
  };
  result.finishReason = finish;
  result.usage = makeUsage(promptIds.length, generated, extra);
}
