// Shapes one generation (generation.js: each choice's text deltas, then the usage) into what the OpenAI API
// returns: a whole chat.completion / text_completion, or the stream of its chunks. The objects themselves
// are built by openai.js; this module decides which chunk comes when.

import { chatChunk, chatCompletion, textChunk, textCompletion, usageChunk } from "./openai.js";

/**
 * A started generation: `deltas` yields each choice's deltas in turn; `result.usage` is final once `deltas`
 * has ended.
 * @typedef {object} Run
 * @property {AsyncIterable<import("./generation.js").ChoiceDelta>} deltas
 * @property {import("./generation.js").GenerationResult} result
 */

/**
 * The chunks of a streamed chat completion. Per choice: a role chunk, content chunks (with the logprobs of
 * their tokens), a finish chunk, all under the choice's index; the usage chunk last when asked for. The
 * first role chunk comes before `start` is called (and waits for the engine), so a reply visibly starts
 * at once.
 * @param {import("./openai.js").ResponseHead} head
 * @param {() => Promise<Run>} start
 * @param {boolean} includeUsage
 */
export async function* chatChunks(head, start, includeUsage) {
  const role = (/** @type {number} */ index) =>
    chatChunk(head, { role: "assistant", content: "" }, null, includeUsage, { index });
  yield role(0);
  const run = await start();
  let current = 0;
  for await (const d of run.deltas) {
    if (d.index !== current) yield role((current = d.index));
    yield d.finishReason
      ? chatChunk(head, {}, d.finishReason, includeUsage, { index: d.index })
      : chatChunk(head, { content: d.text }, null, includeUsage, { index: d.index, logprobs: d.logprobs });
  }
  if (includeUsage) yield usageChunk(head, run.result.usage, "chat.completion.chunk");
}

/**
 * The chunks of a streamed text completion: per choice, the echoed prompt first (with `echo`), then text
 * deltas, the last one with the finish_reason; the usage chunk last when asked for.
 * @param {import("./openai.js").ResponseHead} head
 * @param {() => Promise<Run>} start
 * @param {string} echo  the prompt's text when the request asked for echo, else ""
 * @param {boolean} includeUsage
 */
export async function* completionChunks(head, start, echo, includeUsage) {
  const echoChunk = (/** @type {number} */ index) => textChunk(head, echo, null, includeUsage, { index });
  if (echo) yield echoChunk(0);
  const run = await start();
  let current = 0;
  for await (const d of run.deltas) {
    if (d.index !== current && echo) yield echoChunk(d.index);
    current = d.index;
    yield textChunk(head, d.text, d.finishReason, includeUsage, { index: d.index, logprobs: d.logprobs });
  }
  if (includeUsage) yield usageChunk(head, run.result.usage, "text_completion");
}

/**
 * A whole `chat.completion`, once the generation has ended.
 * @param {import("./openai.js").ResponseHead} head
 * @param {Run} run
 * @param {import("./openai.js").GenerationParams} params
 */
export async function chatResponse(head, run, params) {
  return chatCompletion(head, await collectChoices(run.deltas, params, ""), run.result.usage);
}

/**
 * A whole `text_completion`, once the generation has ended.
 * @param {import("./openai.js").ResponseHead} head
 * @param {Run} run
 * @param {import("./openai.js").GenerationParams} params
 * @param {string} echo  text every choice starts with (the echoed prompt, or "")
 */
export async function completionResponse(head, run, params, echo) {
  return textCompletion(head, await collectChoices(run.deltas, params, echo), run.result.usage);
}

/**
 * Gathers a non-streamed response's choices from the deltas.
 * @param {AsyncIterable<import("./generation.js").ChoiceDelta>} deltas
 * @param {import("./openai.js").GenerationParams} params
 * @param {string} prefix  text every choice starts with (the echoed prompt)
 * @returns {Promise<import("./openai.js").ChoiceOutput[]>}
 */
async function collectChoices(deltas, params, prefix) {
  /** @type {import("./openai.js").ChoiceOutput[]} */
  const choices = Array.from({ length: params.n }, () => ({
    text: prefix,
    finishReason: "stop",
    logprobs: params.logprobs ? [] : null,
  }));
  for await (const d of deltas) {
    const choice = choices[d.index];
    choice.text += d.text;
    if (d.logprobs) choice.logprobs?.push(...d.logprobs);
    if (d.finishReason) choice.finishReason = d.finishReason;
  }
  return choices;
}
