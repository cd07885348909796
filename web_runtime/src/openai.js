// OpenAI request validation and response builders. The field set, defaults and error codes match the
// Python REST API (webbuild/engine/request.py); test/fixtures/request_cases.json holds the cases both sides must
// pass.

import { ContextLengthExceededError, InvalidRequestError, UnsupportedParameterError } from "./errors.js";

/**
 * @typedef {object} GenerationParams  a validated request, defaults applied
 * @property {number | null} max_tokens  as given; when omitted, null for chat and 16 for completions (the
 *   effective value depends on the prompt's length: checkAgainstModel)
 * @property {boolean} max_tokens_given  whether the request set max_tokens (or max_completion_tokens)
 * @property {number} temperature
 * @property {number} top_p
 * @property {number} presence_penalty
 * @property {number} frequency_penalty
 * @property {Record<string, number> | null} logit_bias
 * @property {string[]} stop
 * @property {number | null} seed
 * @property {number} n  choices to generate, 1..16
 * @property {boolean} logprobs  whether choices carry log-probabilities
 * @property {number} top_logprobs  alternatives per token, best first (0..20 for chat, 0..5 for completions)
 * @property {boolean} stream
 * @property {boolean} include_usage
 * @property {string | null} model
 */

/**
 * @typedef {GenerationParams & {messages: import("./chat_template.js").ChatMessage[],
 *   chat_template_kwargs: Record<string, string | number | boolean>,
 *   response_format: {type: string, schema?: Record<string, any> | null} | null,
 *   tools: Record<string, any>[], tool_choice: string, tool_name: string | null,
 *   parallel_tool_calls: boolean}} ChatParams
 * @typedef {GenerationParams & {prompt: string | number[], echo: boolean}} CompletionParams
 */

/** @typedef {{temperature?: number, top_p?: number, presence_penalty?: number, frequency_penalty?: number}} ModelDefaults */

const COMMON_FIELDS = [
  "model",
  "frequency_penalty",
  "presence_penalty",
  "logit_bias",
  "logprobs",
  "max_tokens",
  "n",
  "seed",
  "stop",
  "stream",
  "stream_options",
  "temperature",
  "top_p",
  "user",
];
const CHAT_FIELDS = new Set([
  ...COMMON_FIELDS,
  "messages",
  "max_completion_tokens",
  "top_logprobs",
  "tools",
  "tool_choice",
  "parallel_tool_calls",
  "response_format",
  "chat_template_kwargs",
]);
const COMPLETION_FIELDS = new Set([...COMMON_FIELDS, "prompt", "echo", "suffix", "best_of"]);
const ROLES = new Set(["system", "developer", "user", "assistant", "tool"]);
/** Chat template variables the engine sets itself (webbuild/engine/request.py TEMPLATE_RESERVED). */
const TEMPLATE_RESERVED = new Set(["messages", "add_generation_prompt", "bos_token", "eos_token", "pad_token"]);

/** Completions default to 16 tokens in OpenAI's API; chat runs until a stop or the context window ends. */
export const COMPLETION_DEFAULT_MAX_TOKENS = 16;
/** Most choices per request (n). */
export const MAX_CHOICES = 16;
/** Most alternatives per token: chat's top_logprobs, completions' logprobs (as OpenAI caps them). */
export const MAX_TOP_LOGPROBS = { chat: 20, completion: 5 };

/**
 * @param {unknown} request
 * @param {ModelDefaults} [defaults]  the model's generation defaults (mlc-chat-config.json)
 * @returns {ChatParams}
 */
export function parseChatRequest(request, defaults = {}) {
  const req = requireObject(request);
  checkWellFormed(req);
  checkFields(req, CHAT_FIELDS);
  const messages = parseMessages(req.messages);
  const tools = parseTools(req.tools);
  const { tool_choice, tool_name } = parseToolChoice(req.tool_choice, tools);
  const parallel_tool_calls = optionalBool(req, "parallel_tool_calls") ?? true;
  const response_format = parseResponseFormat(req.response_format);
  if (response_format !== null && tools.length > 0 && tool_choice !== "none") {
    throw unsupported(
      "response_format",
      "response_format json_object/json_schema together with tools is not supported; drop one, or set tool_choice to none.",
    );
  }
  const logprobs = optionalBool(req, "logprobs") ?? false;
  let topLogprobs = 0;
  if (req.top_logprobs != null) {
    if (!logprobs) throw invalid("top_logprobs", "top_logprobs needs logprobs: true.");
    topLogprobs = integer(req.top_logprobs, "top_logprobs", 0, MAX_TOP_LOGPROBS.chat);
  }
  if (req.max_tokens != null && req.max_completion_tokens != null && req.max_tokens !== req.max_completion_tokens) {
    throw invalid("max_completion_tokens", "Give max_tokens or max_completion_tokens, not two different values.");
  }
  const maxField = req.max_completion_tokens != null ? "max_completion_tokens" : "max_tokens";
  const chat_template_kwargs = templateKwargs(req.chat_template_kwargs);
  return {
    ...parseCommon(req, defaults, maxField, null),
    logprobs,
    top_logprobs: topLogprobs,
    messages,
    chat_template_kwargs,
    response_format,
    tools,
    tool_choice,
    tool_name,
    parallel_tool_calls,
  };
}

/**
 * Variables a chat template may read (Qwen3's `enable_thinking` ...); never the ones the engine sets.
 * @param {unknown} kwargs
 * @returns {Record<string, string | number | boolean>}
 */
function templateKwargs(kwargs) {
  if (kwargs == null) return {};
  const obj = requireObject(kwargs, "chat_template_kwargs");
  for (const [key, value] of Object.entries(obj)) {
    if (TEMPLATE_RESERVED.has(key)) {
      throw invalid("chat_template_kwargs", `chat_template_kwargs cannot set ${key}; it is set by the engine.`);
    }
    if (!["string", "number", "boolean"].includes(typeof value)) {
      throw invalid("chat_template_kwargs", `chat_template_kwargs.${key} must be a string, number or boolean.`);
    }
  }
  return { ...obj };
}

/**
 * @param {unknown} request
 * @param {ModelDefaults} [defaults]
 * @returns {CompletionParams}
 */
export function parseCompletionRequest(request, defaults = {}) {
  const req = requireObject(request);
  checkWellFormed(req);
  checkFields(req, COMPLETION_FIELDS);
  const prompt = parsePrompt(req.prompt);
  if (req.suffix != null && req.suffix !== "") throw unsupported("suffix", "suffix (insertion) is not supported.");
  if (req.best_of != null && req.best_of !== 1) throw unsupported("best_of", "best_of must be 1.");
  if (req.echo != null && typeof req.echo !== "boolean") throw invalid("echo", "echo must be a boolean.");
  // Completions take logprobs as a count of alternatives (the chat API's top_logprobs).
  const topLogprobs = req.logprobs == null ? null : integer(req.logprobs, "logprobs", 0, MAX_TOP_LOGPROBS.completion);
  const params = {
    ...parseCommon(req, defaults, "max_tokens", COMPLETION_DEFAULT_MAX_TOKENS),
    logprobs: topLogprobs !== null,
    top_logprobs: topLogprobs ?? 0,
    prompt,
    echo: req.echo === true,
  };
  // OpenAI answers echo + logprobs with the prompt's log-probabilities too; this engine does not compute them.
  if (params.echo && params.logprobs) {
    throw unsupported("echo", "echo together with logprobs (log-probabilities of the prompt) is not supported.");
  }
  return params;
}

/**
 * @typedef {object} ModelLimits  what checkAgainstModel needs to know of the loaded model
 * @property {number} contextWindowSize  tokens the KV cache holds: prompt plus generated
 * @property {number | null} [vocabSize]  null or absent: logit_bias ids are not checked
 */

/**
 * The request checks that need the model and the prompt's length, run by the engine after it tokenized
 * the prompt. The Python engine applies exactly these rules (test/fixtures/request_cases.json
 * "model_cases" holds the shared cases); W = contextWindowSize, P = promptTokens:
 *   a. P >= W: ContextLengthExceededError (context_length_exceeded), param "messages" (chat) or "prompt"
 *      (completions): nothing would be left to generate. The message names P and W.
 *   b. max_tokens given and P + max_tokens > W: ContextLengthExceededError, param "max_tokens" (also when
 *      the request named it max_completion_tokens). A given max_tokens is never clamped, as in OpenAI's API.
 *      The message names P, max_tokens and W.
 *   c. max_tokens omitted: the effective max_tokens is W - P for chat, min(16, W - P) for completions.
 *   d. logit_bias names a token id >= vocabSize: InvalidRequestError, code invalid_request (the parser's
 *      code for every out-of-range value), param "logit_bias". The message names the id and vocabSize.
 * Checked in the order a, b, d: a request that breaks several gets the first one's error.
 * @param {ChatParams | CompletionParams} params  a parsed request (parseChatRequest / parseCompletionRequest)
 * @param {ModelLimits} model
 * @param {number} promptTokens  the prompt's length in tokens (chat template applied)
 * @returns {number}  the effective max_tokens
 */
export function checkAgainstModel(params, { contextWindowSize: window, vocabSize = null }, promptTokens) {
  const chat = !("prompt" in params);
  if (promptTokens >= window) {
    throw new ContextLengthExceededError(
      `The prompt has ${promptTokens} tokens; this model's context window is ${window} tokens, and the reply ` +
        "needs at least one more. Shorten the prompt.",
      { param: chat ? "messages" : "prompt", data: { context_window_size: window, prompt_tokens: promptTokens } },
    );
  }
  const room = window - promptTokens;
  if (params.max_tokens_given && /** @type {number} */ (params.max_tokens) > room) {
    throw new ContextLengthExceededError(
      `The prompt's ${promptTokens} tokens plus max_tokens ${params.max_tokens} exceed this model's context ` +
        `window of ${window} tokens. Lower max_tokens to ${room} or shorten the prompt.`,
      { param: "max_tokens", data: { context_window_size: window, prompt_tokens: promptTokens } },
    );
  }
  if (vocabSize != null && params.logit_bias) {
    // Keys are digit strings (the parser checked); a huge one still compares right as a Number.
    const bad = Object.keys(params.logit_bias).find((id) => Number(id) >= vocabSize);
    if (bad !== undefined) {
      throw invalid("logit_bias", `logit_bias names token id ${bad}; the vocabulary has ${vocabSize} tokens.`);
    }
  }
  if (params.max_tokens_given) return /** @type {number} */ (params.max_tokens);
  return chat ? room : Math.min(COMPLETION_DEFAULT_MAX_TOKENS, room);
}

/**
 * @param {Record<string, any>} req
 * @param {ModelDefaults} defaults
 * @param {string} maxField
 * @param {number | null} defaultMax
 * @returns {Omit<GenerationParams, "logprobs" | "top_logprobs">}  logprobs differ per endpoint
 */
function parseCommon(req, defaults, maxField, defaultMax) {
  if (req.model != null && typeof req.model !== "string") throw invalid("model", "model must be a string.");
  if (req.user != null && typeof req.user !== "string") throw invalid("user", "user must be a string.");
  const n = req.n == null ? 1 : integer(req.n, "n", 1, MAX_CHOICES);
  const stream = optionalBool(req, "stream") ?? false;
  let includeUsage = false;
  if (req.stream_options != null) {
    if (!stream) throw invalid("stream_options", "stream_options is only allowed when stream is true.");
    const opts = requireObject(req.stream_options, "stream_options");
    includeUsage = optionalBool(opts, "include_usage", "stream_options.include_usage") ?? false;
  }
  const maxGiven = req[maxField] != null;
  return {
    model: req.model ?? null,
    max_tokens: maxGiven ? integer(req[maxField], maxField, 1) : defaultMax,
    max_tokens_given: maxGiven,
    temperature: number(req.temperature ?? defaults.temperature ?? 1, "temperature", 0, 2),
    top_p: number(req.top_p ?? defaults.top_p ?? 1, "top_p", 0, 1),
    presence_penalty: number(req.presence_penalty ?? defaults.presence_penalty ?? 0, "presence_penalty", -2, 2),
    frequency_penalty: number(req.frequency_penalty ?? defaults.frequency_penalty ?? 0, "frequency_penalty", -2, 2),
    logit_bias: parseLogitBias(req.logit_bias),
    stop: parseStop(req.stop),
    seed: req.seed == null ? null : integer(req.seed, "seed", Number.MIN_SAFE_INTEGER),
    n,
    stream,
    include_usage: includeUsage,
  };
}

/** @param {unknown} messages */
function parseMessages(messages) {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw invalid("messages", "messages must be a non-empty array.");
  }
  return messages.map((m, i) => {
    const param = `messages[${i}]`;
    const msg = requireObject(m, param);
    if (typeof msg.role !== "string" || !ROLES.has(msg.role)) {
      throw invalid(`${param}.role`, `${param}.role must be one of ${[...ROLES].join(", ")}.`);
    }
    const toolCalls = msg.tool_calls == null ? null : msg.role === "assistant" ? msg.tool_calls : undefined;
    if (toolCalls === undefined) throw invalid(`${param}.tool_calls`, "Only assistant messages have tool_calls.");
    const calls = toolCalls === null ? null : parseToolCalls(toolCalls, `${param}.tool_calls`);
    const content = msg.content;
    if (content === null || content === undefined) {
      if (msg.role !== "assistant") throw invalid(`${param}.content`, `${param}.content is required.`);
    } else if (Array.isArray(content)) {
      content.forEach((part, j) => {
        const p = requireObject(part, `${param}.content[${j}]`);
        if (p.type !== "text") {
          throw unsupported(`${param}.content[${j}].type`, `Content parts of type "${p.type}" are not supported.`);
        }
        if (typeof p.text !== "string")
          throw invalid(`${param}.content[${j}].text`, "A text part needs a text string.");
      });
    } else if (typeof content !== "string") {
      throw invalid(`${param}.content`, `${param}.content must be a string or an array of text parts.`);
    }
    // "developer" is OpenAI's newer name for "system"; chat templates only know the latter.
    const role = msg.role === "developer" ? "system" : msg.role;
    /** @type {import("./chat_template.js").ChatMessage} */
    const out = { role, content: content ?? "" };
    if (calls !== null) out.tool_calls = calls;
    if (msg.role === "tool") {
      if (typeof msg.tool_call_id !== "string") {
        throw invalid(`${param}.tool_call_id`, `${param}.tool_call_id is required for a tool message.`);
      }
      out.tool_call_id = msg.tool_call_id;
    }
    if (typeof msg.name === "string") out.name = msg.name;
    return out;
  });
}

const FUNCTION_NAME = /^[A-Za-z0-9_-]{1,64}$/;
const TOOL_CHOICES = ["none", "auto", "required"];
const RESPONSE_FORMATS = ["text", "json_object", "json_schema"];
const MAX_TOOLS = 128;

/**
 * @param {unknown} value
 * @param {string} param
 * @returns {string}
 */
function functionName(value, param) {
  if (typeof value !== "string" || !FUNCTION_NAME.test(value)) {
    throw invalid(param, `${param} must be 1 to 64 letters, digits, underscores or dashes.`);
  }
  return value;
}

/**
 * OpenAI's tools, checked as webbuild/engine/request.py checks them (the same params in errors).
 * @param {unknown} tools
 * @returns {Record<string, any>[]}
 */
function parseTools(tools) {
  if (tools == null) return [];
  if (!Array.isArray(tools) || tools.length > MAX_TOOLS) {
    throw invalid("tools", `tools must be an array of at most ${MAX_TOOLS} tools.`);
  }
  const names = new Set();
  return tools.map((t, i) => {
    const param = `tools[${i}]`;
    const tool = requireObject(t, param);
    if (tool.type !== "function") {
      throw unsupported(`${param}.type`, `Tools of type "${tool.type}" are not supported; use "function".`);
    }
    const fn = requireObject(tool.function, `${param}.function`);
    const name = functionName(fn.name, `${param}.function.name`);
    if (names.has(name)) throw invalid(`${param}.function.name`, `Two tools are named "${name}".`);
    names.add(name);
    if (fn.description != null && typeof fn.description !== "string") {
      throw invalid(`${param}.function.description`, `${param}.function.description must be a string.`);
    }
    if (fn.parameters != null) requireObject(fn.parameters, `${param}.function.parameters`);
    optionalBool(fn, "strict", `${param}.function.strict`);
    return { type: "function", function: Object.fromEntries(Object.entries(fn).filter(([, v]) => v != null)) };
  });
}

/**
 * @param {unknown} choice
 * @param {Record<string, any>[]} tools
 * @returns {{tool_choice: string, tool_name: string | null}}
 */
function parseToolChoice(choice, tools) {
  if (choice == null) return { tool_choice: "auto", tool_name: null };
  if (typeof choice === "string") {
    if (!TOOL_CHOICES.includes(choice)) {
      throw invalid("tool_choice", `tool_choice must be one of ${TOOL_CHOICES.join(", ")} or a named function.`);
    }
    if (choice === "required" && tools.length === 0) throw invalid("tool_choice", "tool_choice required needs tools.");
    return { tool_choice: choice, tool_name: null };
  }
  const named = requireObject(choice, "tool_choice");
  if (named.type !== "function") throw invalid("tool_choice.type", "tool_choice.type must be 'function'.");
  const fn = requireObject(named.function, "tool_choice.function");
  const name = functionName(fn.name, "tool_choice.function.name");
  if (!tools.some((t) => t.function.name === name)) {
    throw invalid("tool_choice", `tool_choice names "${name}", which is not one of the tools.`);
  }
  return { tool_choice: "function", tool_name: name };
}

/**
 * @param {unknown} format
 * @returns {{type: string, schema?: Record<string, any> | null} | null}
 */
function parseResponseFormat(format) {
  if (format == null) return null;
  const fmt = requireObject(format, "response_format");
  if (typeof fmt.type !== "string") throw invalid("response_format", "response_format.type is required.");
  if (!RESPONSE_FORMATS.includes(fmt.type)) {
    throw unsupported(
      "response_format",
      `response_format type "${fmt.type}" is not supported; use one of ${RESPONSE_FORMATS.join(", ")}.`,
    );
  }
  if (fmt.type === "text") return null;
  if (fmt.type === "json_object") return { type: fmt.type };
  const spec = requireObject(fmt.json_schema, "response_format.json_schema");
  if (typeof spec.name !== "string" || !spec.name) {
    throw invalid("response_format.json_schema.name", "response_format.json_schema.name is required.");
  }
  optionalBool(spec, "strict", "response_format.json_schema.strict");
  const schema = spec.schema == null ? null : requireObject(spec.schema, "response_format.json_schema.schema");
  return { type: fmt.type, schema };
}

/**
 * An assistant message's earlier calls, arguments parsed (chat templates write them with tojson).
 * @param {unknown} calls
 * @param {string} param
 */
function parseToolCalls(calls, param) {
  if (!Array.isArray(calls)) throw invalid(param, `${param} must be an array.`);
  return calls.map((c, j) => {
    const where = `${param}[${j}]`;
    const call = requireObject(c, where);
    if (typeof call.id !== "string") throw invalid(`${where}.id`, `${where}.id must be a string.`);
    if (call.type !== "function") throw unsupported(`${where}.type`, `${where}.type must be 'function'.`);
    const fn = requireObject(call.function, `${where}.function`);
    const name = functionName(fn.name, `${where}.function.name`);
    let args = null;
    try {
      args = typeof fn.arguments === "string" ? JSON.parse(fn.arguments) : null;
    } catch {
      args = null;
    }
    if (args === null || typeof args !== "object" || Array.isArray(args)) {
      throw invalid(`${where}.function.arguments`, `${where}.function.arguments must be a JSON object text.`);
    }
    return { id: call.id, type: "function", function: { name, arguments: args } };
  });
}

/** @param {unknown} prompt */
function parsePrompt(prompt) {
  let p = prompt;
  if (Array.isArray(p) && p.length === 1 && (typeof p[0] === "string" || Array.isArray(p[0]))) p = p[0];
  if (typeof p === "string") return p;
  if (Array.isArray(p) && p.length > 0 && p.every((t) => Number.isInteger(t) && t >= 0)) return p;
  if (Array.isArray(p) && p.length > 1 && p.every((t) => typeof t === "string" || Array.isArray(t))) {
    throw unsupported("prompt", "Only one prompt per request is supported.");
  }
  throw invalid("prompt", "prompt must be a string or a non-empty array of token ids.");
}

/** @param {unknown} stop */
function parseStop(stop) {
  if (stop == null) return [];
  const list = typeof stop === "string" ? [stop] : stop;
  if (!Array.isArray(list) || list.some((s) => typeof s !== "string")) {
    throw invalid("stop", "stop must be a string or an array of strings.");
  }
  if (list.length > 4) throw invalid("stop", "stop takes at most 4 sequences.");
  return list.filter((s) => s.length > 0);
}

/** @param {unknown} bias */
function parseLogitBias(bias) {
  if (bias == null) return null;
  const obj = requireObject(bias, "logit_bias");
  /** @type {Record<string, number>} */
  const out = {};
  for (const [key, value] of Object.entries(obj)) {
    if (!/^\d+$/.test(key)) throw invalid("logit_bias", `logit_bias keys must be token ids, got "${key}".`);
    out[key] = number(value, `logit_bias.${key}`, -100, 100);
  }
  return out;
}

/**
 * @param {unknown} value
 * @param {string} [param]
 * @returns {Record<string, any>}
 */
function requireObject(value, param) {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw invalid(param ?? null, `${param ?? "The request body"} must be a JSON object.`);
  }
  return /** @type {Record<string, any>} */ (value);
}

const LONE_SURROGATE = /[\uD800-\uDFFF]/u; // with the u flag a proper pair is one code point, never matched

/**
 * Refuses a lone UTF-16 surrogate anywhere in the body (JSON may write one as "\\ud800"): no tokenizer can
 * encode it as UTF-8. The same walk as webbuild/engine/request.py, so both report the same param: an object's
 * keys, then its values, in order.
 * @param {unknown} body
 */
function checkWellFormed(body) {
  /** @type {[unknown, string | null][]} */
  const stack = [[body, null]];
  while (stack.length > 0) {
    const [value, param] = /** @type {[unknown, string | null]} */ (stack.pop());
    if (typeof value === "string" && LONE_SURROGATE.test(value)) {
      const where = param ?? "The request body";
      throw invalid(param, `${where} is not valid Unicode: it contains a lone UTF-16 surrogate.`);
    }
    /** @type {[unknown, string | null][]} */
    const items = [];
    if (Array.isArray(value)) {
      value.forEach((item, i) => items.push([item, `${param}[${i}]`]));
    } else if (value !== null && typeof value === "object") {
      const entries = Object.entries(value);
      for (const [key] of entries) items.push([key, param]);
      for (const [key, item] of entries) items.push([item, param ? `${param}.${key}` : key]);
    }
    for (let i = items.length - 1; i >= 0; i--) stack.push(items[i]); // the first item is checked first
  }
}

/**
 * @param {Record<string, any>} req
 * @param {Set<string>} allowed
 */
function checkFields(req, allowed) {
  for (const key of Object.keys(req)) {
    if (!allowed.has(key)) throw invalid(key, `Unrecognized request argument supplied: ${key}`);
  }
}

/**
 * @param {Record<string, any>} obj
 * @param {string} key
 * @param {string} [param]
 * @returns {boolean | undefined}
 */
function optionalBool(obj, key, param = key) {
  const value = obj[key];
  if (value == null) return undefined;
  if (typeof value !== "boolean") throw invalid(param, `${param} must be a boolean.`);
  return value;
}

/**
 * @param {unknown} value
 * @param {string} param
 * @param {number} min
 * @param {number} max
 */
function number(value, param, min, max) {
  if (typeof value !== "number" || !Number.isFinite(value)) throw invalid(param, `${param} must be a number.`);
  if (value < min || value > max) throw invalid(param, `${param} must be between ${min} and ${max}, got ${value}.`);
  return value;
}

/**
 * @param {unknown} value
 * @param {string} param
 * @param {number} min
 * @param {number} [max]
 */
function integer(value, param, min, max = Number.MAX_SAFE_INTEGER) {
  if (typeof value !== "number" || !Number.isSafeInteger(value)) throw invalid(param, `${param} must be an integer.`);
  if (value < min) throw invalid(param, `${param} must be at least ${min}, got ${value}.`);
  if (value > max) throw invalid(param, `${param} must be at most ${max}, got ${value}.`);
  return value;
}

/**
 * @param {string | null} param
 * @param {string} message
 */
function invalid(param, message) {
  return new InvalidRequestError(message, { param });
}

/**
 * @param {string} param
 * @param {string} message
 */
function unsupported(param, message) {
  return new UnsupportedParameterError(message, { param });
}

// ---- responses -------------------------------------------------------------------------------------

/**
 * @typedef {object} Usage
 * @property {number} prompt_tokens
 * @property {number} completion_tokens
 * @property {number} total_tokens
 * @property {{cached_tokens: number}} [prompt_tokens_details]  prompt tokens whose KV cache was reused from
 *   the previous request (as OpenAI reports its prompt caching)
 * @property {Record<string, number>} [extra]  engine timings: prefill/decode tokens per second, seconds
 */

/**
 * @param {number} promptTokens
 * @param {number} completionTokens
 * @param {Record<string, number>} [extra]
 * @param {number} [cachedTokens]  adds prompt_tokens_details
 * @returns {Usage}
 */
export function makeUsage(promptTokens, completionTokens, extra, cachedTokens) {
  /** @type {Usage} */
  const usage = {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
  };
  if (cachedTokens !== undefined) usage.prompt_tokens_details = { cached_tokens: cachedTokens };
  return extra ? { ...usage, extra } : usage;
}

/**
 * @typedef {{id: string, created: number, model: string}} ResponseHead  shared by every chunk of one response
 */

/**
 * A new response's head: a fresh id ("chatcmpl-..." for chat, "cmpl-..." for completions) and the time.
 * @param {"chatcmpl" | "cmpl"} prefix
 * @param {string} model  the loaded model's id
 * @returns {ResponseHead}
 */
export function responseHead(prefix, model) {
  return { id: newCompletionId(prefix), created: nowSeconds(), model };
}

/**
 * @param {"chatcmpl" | "cmpl"} prefix
 * @returns {string}
 */
export function newCompletionId(prefix) {
  const rand = globalThis.crypto?.randomUUID?.().replaceAll("-", "") ?? Math.random().toString(16).slice(2);
  return `${prefix}-${rand.slice(0, 24)}`;
}

/** @returns {number} unix seconds, as OpenAI's `created` */
export function nowSeconds() {
  return Math.floor(Date.now() / 1000);
}

/**
 * @typedef {object} ChoiceOutput  one finished choice, as the engine collected it
 * @property {string | null} text  message content (null when a chat choice only called tools), or completion
 *   text (echoed prompt included)
 * @property {string} finishReason
 * @property {import("./tool_calls.js").ToolCall[]} [toolCalls]  a chat choice's calls
 * @property {import("./logprobs.js").TokenLogprob[] | null} logprobs  null when not requested
 */

/**
 * The envelope every response object shares: {id, object, created, model, choices}, then `usage` unless it
 * is undefined (a streamed chunk carries usage: null only when the request asked for include_usage).
 * @template C
 * @param {ResponseHead} head
 * @param {"chat.completion" | "chat.completion.chunk" | "text_completion"} object
 * @param {C[]} choices
 * @param {Usage | null} [usage]
 */
export function envelope(head, object, choices, usage) {
  const body = { id: head.id, object, created: head.created, model: head.model, choices };
  return usage === undefined ? body : { ...body, usage };
}

/**
 * One `chat.completion.chunk`. Per choice: the first carries {role: "assistant", content: ""}, then content
 * deltas, then {} with the finish_reason; with include_usage, every chunk has usage: null except a last
 * one with choices: [] and the usage. With logprobs, a content chunk carries the entries of the tokens
 * whose text it completes.
 * @param {ResponseHead} head
 * @param {{role?: string, content?: string, tool_calls?: Record<string, any>[]}} delta
 * @param {string | null} finishReason
 * @param {boolean} includeUsage
 * @param {{index?: number, logprobs?: import("./logprobs.js").TokenLogprob[] | null}} [choice]
 */
export function chatChunk(head, delta, finishReason, includeUsage, { index = 0, logprobs = null } = {}) {
  const choice = { index, delta, logprobs: chatLogprobs(logprobs), finish_reason: finishReason };
  return envelope(head, "chat.completion.chunk", [choice], includeUsage ? null : undefined);
}

/**
 * The last chunk of a stream that asked for include_usage: no choices, the usage.
 * @param {ResponseHead} head
 * @param {Usage} usage
 * @param {"chat.completion.chunk" | "text_completion"} object
 */
export function usageChunk(head, usage, object) {
  return envelope(head, object, [], usage);
}

/**
 * @param {ResponseHead} head
 * @param {ChoiceOutput[]} choices  index i is choice i
 * @param {Usage} usage
 */
export function chatCompletion(head, choices, usage) {
  const out = choices.map((c, index) => ({
    index,
    message: { role: "assistant", content: c.text, ...(c.toolCalls?.length ? { tool_calls: c.toolCalls } : {}) },
    logprobs: chatLogprobs(c.logprobs),
    finish_reason: c.finishReason,
  }));
  return envelope(head, "chat.completion", out, usage);
}

/**
 * A streamed `text_completion` chunk (same object name and shape as the whole completion).
 * @param {ResponseHead} head
 * @param {string} text
 * @param {string | null} finishReason
 * @param {boolean} includeUsage  adds usage: null
 * @param {{index?: number, logprobs?: import("./logprobs.js").TokenLogprob[] | null}} [choice]
 */
export function textChunk(head, text, finishReason, includeUsage, { index = 0, logprobs = null } = {}) {
  const choice = { index, text, logprobs: completionLogprobs(logprobs), finish_reason: finishReason };
  return envelope(head, "text_completion", [choice], includeUsage ? null : undefined);
}

/**
 * A `text_completion`.
 * @param {ResponseHead} head
 * @param {ChoiceOutput[]} choices
 * @param {Usage} usage
 */
export function textCompletion(head, choices, usage) {
  const out = choices.map((c, index) => ({
    index,
    text: c.text ?? "",
    logprobs: completionLogprobs(c.logprobs),
    finish_reason: c.finishReason,
  }));
  return envelope(head, "text_completion", out, usage);
}

/**
 * The chat API's logprobs: {content: [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}.
 * `bytes` is the UTF-8 encoding of the token's text, as integers.
 * @param {import("./logprobs.js").TokenLogprob[] | null} entries
 */
export function chatLogprobs(entries) {
  if (entries == null) return null;
  return {
    content: entries.map((e) => ({
      token: e.token,
      logprob: e.logprob,
      bytes: utf8(e.token),
      top_logprobs: e.top.map((t) => ({ token: t.token, logprob: t.logprob, bytes: utf8(t.token) })),
    })),
  };
}

/**
 * The completions API's logprobs: parallel lists over the tokens, top_logprobs as {text: logprob} (a text
 * that two alternatives decode to keeps the better one), text_offset where each token's text starts in the
 * choice's text (in UTF-16 code units, JS string indices).
 * @param {import("./logprobs.js").TokenLogprob[] | null} entries
 */
export function completionLogprobs(entries) {
  if (entries == null) return null;
  return {
    tokens: entries.map((e) => e.token),
    token_logprobs: entries.map((e) => e.logprob),
    top_logprobs: entries.map((e) => {
      /** @type {Map<string, number>} */
      const top = new Map();
      for (const t of e.top) if (!top.has(t.token)) top.set(t.token, t.logprob);
      return Object.fromEntries(top); // own data properties, so a token text like "__proto__" stays a key
    }),
    text_offset: entries.map((e) => e.offset),
  };
}

const encoder = new TextEncoder();

/** @param {string} text */
function utf8(text) {
  return Array.from(encoder.encode(text));
}
