// The public request and response shapes (OpenAI's, with this runtime's additions), as JSDoc typedefs: the
// package's .d.ts files carry them for TypeScript users. No code. openai.js validates requests against the
// same field set and builds these responses; test/fixtures/request_cases.json pins the rules.

/**
 * @typedef {object} ChatMessage
 * @property {"system" | "developer" | "user" | "assistant" | "tool"} role  "developer" is read as "system"
 * @property {string | {type: "text", text: string}[] | null} [content]  null only for an assistant message
 * @property {string} [name]
 */

/**
 * The fields both endpoints take. Omitted sampling fields take the model's defaults (mlc-chat-config.json),
 * then OpenAI's.
 * @typedef {object} CommonRequestFields
 * @property {string | null} [model]  when given, must be the loaded model's id
 * @property {number | null} [max_tokens]  at least 1; prompt + max_tokens must fit the context window.
 *   Omitted: the rest of the window for chat, min(16, the rest) for completions
 * @property {number | null} [temperature]  0..2; 0 is greedy
 * @property {number | null} [top_p]  0..1
 * @property {number | null} [presence_penalty]  -2..2
 * @property {number | null} [frequency_penalty]  -2..2
 * @property {Record<string, number> | null} [logit_bias]  token id -> bias in -100..100
 * @property {string | string[] | null} [stop]  up to 4 strings, not included in the output
 * @property {number | null} [seed]  same seed, same request: same output
 * @property {number | null} [n]  choices to generate, 1..16
 * @property {boolean | null} [stream]
 * @property {{include_usage?: boolean} | null} [stream_options]  only with stream: true
 * @property {string} [user]
 */

/**
 * @typedef {object} ChatRequestFields
 * @property {ChatMessage[]} messages
 * @property {number | null} [max_completion_tokens]  the same as max_tokens
 * @property {boolean | null} [logprobs]
 * @property {number | null} [top_logprobs]  0..20, with logprobs: true
 * @property {{type: "text"} | null} [response_format]
 * @property {[] | null} [tools]  tool calls are not supported yet
 * @property {"none" | "auto" | null} [tool_choice]
 * @property {boolean | null} [parallel_tool_calls]
 */

/** @typedef {CommonRequestFields & ChatRequestFields} ChatCompletionRequest  `chat.completions.create()` */

/**
 * @typedef {object} CompletionRequestFields
 * @property {string | number[] | [string] | [number[]]} prompt  text, or token ids; one prompt per request
 * @property {boolean | null} [echo]  the choice's text starts with the prompt
 * @property {number | null} [logprobs]  0..5 alternatives per token (not with echo)
 * @property {string | null} [suffix]  only "" (insertion is not supported)
 * @property {1 | null} [best_of]
 */

/** @typedef {CommonRequestFields & CompletionRequestFields} CompletionRequest  `completions.create()` */

/** @typedef {"stop" | "length" | "abort"} FinishReason  "abort": interrupt(), or the request was cancelled */

/** @typedef {import("./openai.js").Usage} Usage */

/**
 * @typedef {object} TopLogprob
 * @property {string} token  the token decoded alone
 * @property {number} logprob  natural log
 * @property {number[]} bytes  UTF-8 of `token`
 */

/** @typedef {TopLogprob & {top_logprobs: TopLogprob[]}} ChatTokenLogprob */

/** @typedef {{content: ChatTokenLogprob[]}} ChatLogprobs */

/**
 * @typedef {object} CompletionLogprobs
 * @property {string[]} tokens
 * @property {number[]} token_logprobs
 * @property {Record<string, number>[]} top_logprobs
 * @property {number[]} text_offset  where each token's text starts in the choice's text (UTF-16 units)
 */

/**
 * @typedef {object} ChatCompletion  a whole chat reply (`stream` false or omitted)
 * @property {string} id  "chatcmpl-..."
 * @property {"chat.completion"} object
 * @property {number} created  unix seconds
 * @property {string} model
 * @property {{index: number, message: {role: "assistant", content: string}, logprobs: ChatLogprobs | null, finish_reason: FinishReason}[]} choices
 * @property {Usage} usage
 */

/**
 * @typedef {object} ChatCompletionChunk  one streamed piece of a chat reply (`stream: true`)
 * @property {string} id  the same for every chunk of one reply
 * @property {"chat.completion.chunk"} object
 * @property {number} created
 * @property {string} model
 * @property {{index: number, delta: {role?: "assistant", content?: string}, logprobs: ChatLogprobs | null, finish_reason: FinishReason | null}[]} choices
 *   one choice per chunk; none in the usage chunk
 * @property {Usage | null} [usage]  present only with stream_options.include_usage: null, then the usage
 *   in the last chunk
 */

/**
 * @typedef {object} Completion  a whole text completion (`stream` false or omitted)
 * @property {string} id  "cmpl-..."
 * @property {"text_completion"} object
 * @property {number} created
 * @property {string} model
 * @property {{index: number, text: string, logprobs: CompletionLogprobs | null, finish_reason: FinishReason}[]} choices
 * @property {Usage} usage
 */

/**
 * @typedef {object} CompletionChunk  one streamed piece of a text completion (`stream: true`)
 * @property {string} id
 * @property {"text_completion"} object
 * @property {number} created
 * @property {string} model
 * @property {{index: number, text: string, logprobs: CompletionLogprobs | null, finish_reason: FinishReason | null}[]} choices
 * @property {Usage | null} [usage]
 */

/**
 * What `chat.completions.create(request)` resolves to: the chunks when the request streams, else the reply.
 * @template {ChatCompletionRequest} R
 * @typedef {R extends {stream: true} ? AsyncIterableIterator<ChatCompletionChunk> : ChatCompletion} ChatCompletionResult
 */

/**
 * What `completions.create(request)` resolves to.
 * @template {CompletionRequest} R
 * @typedef {R extends {stream: true} ? AsyncIterableIterator<CompletionChunk> : Completion} CompletionResult
 */

export {};
