// Shapes one generation (generation.js: each choice's text deltas, then the usage) into what the OpenAI API
// returns: a whole chat.completion / text_completion, or the stream of its chunks. The objects themselves
// are built by openai.js; this module decides which chunk comes when.

import { chatChunk, chatCompletion, textChunk, textCompletion, usageChunk } from "./openai.js";
import { ToolCallParser, callDeltas, splitToolCalls } from "./tool_calls.js";

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
 * at once. With a tool-call format, text that may start a call is held until it is one; each call comes as
 * OpenAI streams it (callDeltas), and a choice that called tools finishes with "tool_calls".
 * @param {import("./openai.js").ResponseHead} head
 * @param {() => Promise<Run>} start
 * @param {boolean} includeUsage
 * @param {import("./tool_calls.js").ToolCallFormat | null} [toolFormat]
 */
export async function* chatChunks(head, start, includeUsage, toolFormat = null) {
  const role = (/** @type {number} */ index) =>
    chatChunk(head, { role: "assistant", content: "" }, null, includeUsage, { index });
  yield role(0);
  const run = await start();
  let current = 0;
  let parser = toolFormat ? new ToolCallParser(toolFormat) : null;
  for await (const d of run.deltas) {
    if (d.index !== current) {
      yield role((current = d.index));
      parser = toolFormat ? new ToolCallParser(toolFormat) : null;
    }
    const options = { index: d.index, logprobs: d.logprobs };
    if (!parser) {
      yield d.finishReason
        ? chatChunk(head, {}, d.finishReason, includeUsage, { index: d.index })
        : chatChunk(head, { content: d.text }, null, includeUsage, options);
      continue;
    }
    yield* toolChunks(head, includeUsage, parser, d.finishReason ? parser.flush() : parser.push(d.text), options);
    if (d.finishReason) {
      const reason = parser.calls.length > 0 && d.finishReason === "stop" ? "tool_calls" : d.finishReason;
      yield chatChunk(head, {}, reason, includeUsage, { index: d.index });
    }
  }
  if (includeUsage) yield usageChunk(head, run.result.usage, "chat.completion.chunk");
}

/**
 * The chunks of one choice's parsed text: content, and each call as its deltas; the tokens' logprobs ride on
 * the first chunk (or on an empty one when the text is held), as the Python engine sends them.
 * @param {import("./openai.js").ResponseHead} head
 * @param {boolean} includeUsage
 * @param {ToolCallParser} parser
 * @param {import("./tool_calls.js").Piece[]} pieces
 * @param {{index: number, logprobs: import("./logprobs.js").TokenLogprob[] | null}} options
 */
function* toolChunks(head, includeUsage, parser, pieces, { index, logprobs }) {
  let entries = logprobs;
  for (const piece of pieces) {
    if (piece.kind === "content") {
      yield chatChunk(head, { content: piece.text }, null, includeUsage, { index, logprobs: entries });
      entries = null;
      continue;
    }
    for (const delta of callDeltas(parser.calls.indexOf(piece.call), piece.call)) {
      yield chatChunk(head, { tool_calls: [delta] }, null, includeUsage, { index, logprobs: entries });
      entries = null;
    }
  }
  if (entries?.length) yield chatChunk(head, {}, null, includeUsage, { index, logprobs: entries });
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
 * @param {import("./tool_calls.js").ToolCallFormat | null} [toolFormat]  splits each choice's calls off its
 *   text (content null when it only called tools; finish_reason "tool_calls")
 */
export async function chatResponse(head, run, params, toolFormat = null) {
  const choices = await collectChoices(run.deltas, params, "");
  for (const choice of toolFormat ? choices : []) {
    const { content, calls } = splitToolCalls(toolFormat, choice.text ?? "");
    choice.text = content;
    choice.toolCalls = calls;
    if (calls.length > 0 && choice.finishReason === "stop") choice.finishReason = "tool_calls";
  }
  return chatCompletion(head, choices, run.result.usage);
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
