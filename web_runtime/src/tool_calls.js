// Tool calls in a model's output, parsed into OpenAI's `tool_calls` as the Python engine parses them
// (webbuild/engine/tool_calls.py): the formats chat templates teach, named in mlc-chat-config.json's
// `tool_call_format` (written by webbuild/build/chat_config.py).

import { UnsupportedParameterError } from "./errors.js";

/**
 * @typedef {object} ToolCallFormat
 * @property {string} structuralTag  xgrammar's name for the format (grammar.js)
 * @property {string} trigger  the text every call starts with
 * @property {string | null} end  the text every call ends with; null: the call is one JSON object
 * @property {string} argumentsKey
 */

/**
 * @typedef {{id: string, type: "function", function: {name: string, arguments: string}}} ToolCall
 */

/** @type {Record<string, ToolCallFormat>} */
export const FORMATS = {
  // Qwen2.5, Qwen3, Hermes: <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>
  hermes: { structuralTag: "qwen_3", trigger: "<tool_call>", end: "</tool_call>", argumentsKey: "arguments" },
  // Llama 3.1-3.3: {"name": ..., "parameters": {...}}
  llama3_json: { structuralTag: "llama", trigger: '{"name"', end: null, argumentsKey: "parameters" },
};

/**
 * The model's tool-call format when a request offers tools it may call (null when it offers none, or
 * tool_choice is none); a model whose chat template shows it no tools refuses them.
 * @param {{tools: Record<string, any>[], tool_choice: string}} params
 * @param {string | null} formatName  mlc-chat-config.json's tool_call_format
 * @param {string} modelId
 * @returns {ToolCallFormat | null}
 */
export function toolFormatFor(params, formatName, modelId) {
  if (params.tools.length === 0 || params.tool_choice === "none") return null;
  const format = formatName ? FORMATS[formatName] : undefined;
  if (!format) {
    throw new UnsupportedParameterError(
      `${modelId}'s chat template does not support tools, so it cannot be shown them or call them.`,
      { param: "tools", tip: "Use a model whose chat template takes tools (Qwen2.5, Qwen3, Llama 3.1+), or drop tools." },
    );
  }
  return format;
}

/** @returns {string} */
export function newCallId() {
  const hex = Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, "0"));
  return `call_${hex.join("")}`;
}

/**
 * A JSON value as Python's json.dumps(ensure_ascii=False) writes it (", " and ": " between items), so a
 * call's arguments read the same from both engines.
 * @param {unknown} value
 * @returns {string}
 */
export function pythonJson(value) {
  if (Array.isArray(value)) return `[${value.map(pythonJson).join(", ")}]`;
  if (value !== null && typeof value === "object") {
    const items = Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${pythonJson(v)}`);
    return `{${items.join(", ")}}`;
  }
  return JSON.stringify(value);
}

/**
 * The length of the JSON object that starts `text` (braces balanced outside strings), or -1 when `text`
 * does not start with "{" or the object is not complete yet.
 * @param {string} text
 */
function objectLength(text) {
  if (text[0] !== "{") return -1;
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === "\\") i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === "{" || c === "[") depth++;
    else if ((c === "}" || c === "]") && --depth === 0) return i + 1;
  }
  return -1;
}

/**
 * The call starting at text[0] (its trigger) and the length of its text, or null when incomplete.
 * @param {ToolCallFormat} fmt
 * @param {string} text
 * @returns {[ToolCall, number] | null}
 */
function parseCall(fmt, text) {
  const close = fmt.end ? text.indexOf(fmt.end) : -1;
  if (fmt.end && close < 0) return null;
  const body = fmt.end ? text.slice(fmt.trigger.length, close).trim() : text;
  const used = objectLength(body);
  if (used < 0) return null;
  let obj;
  try {
    obj = JSON.parse(body.slice(0, used));
  } catch {
    return null;
  }
  if (typeof obj?.name !== "string") return null;
  const args = obj[fmt.argumentsKey] ?? {};
  /** @type {ToolCall} */
  const call = { id: newCallId(), type: "function", function: { name: obj.name, arguments: pythonJson(args) } };
  return [call, fmt.end ? close + fmt.end.length : used];
}

/** @typedef {{kind: "content", text: string} | {kind: "call", call: ToolCall}} Piece */

/**
 * Splits a choice's text, fed piece by piece, into content and calls. `push` returns what can be shown now;
 * text that may start a call is held until known.
 */
export class ToolCallParser {
  /** @param {ToolCallFormat} fmt */
  constructor(fmt) {
    this.fmt = fmt;
    /** @type {ToolCall[]} */ this.calls = [];
    this.held = "";
  }

  /**
   * @param {string} text
   * @returns {Piece[]}
   */
  push(text) {
    this.held += text;
    /** @type {Piece[]} */
    const out = [];
    while (this.held) {
      const at = this.held.indexOf(this.fmt.trigger);
      if (at < 0) {
        const keep = partialSuffix(this.held, this.fmt.trigger);
        this.content(out, this.held.slice(0, this.held.length - keep));
        this.held = this.held.slice(this.held.length - keep);
        break;
      }
      this.content(out, this.held.slice(0, at));
      this.held = this.held.slice(at);
      const found = parseCall(this.fmt, this.held);
      if (found === null) break;
      const [call, used] = found;
      this.calls.push(call);
      out.push({ kind: "call", call });
      this.held = this.held.slice(used);
    }
    return out;
  }

  /** @returns {Piece[]} at the end: held text that never became a call is content */
  flush() {
    /** @type {Piece[]} */
    const out = [];
    this.content(out, this.held);
    this.held = "";
    return out;
  }

  /**
   * @param {Piece[]} out
   * @param {string} text
   */
  content(out, text) {
    // Whitespace between and after calls is the format's, not the model's answer.
    if (text && !(this.calls.length > 0 && !text.trim())) out.push({ kind: "content", text });
  }
}

/**
 * The length of the longest end of `text` that starts `trigger`.
 * @param {string} text
 * @param {string} trigger
 */
function partialSuffix(text, trigger) {
  for (let k = Math.min(text.length, trigger.length - 1); k > 0; k--) {
    if (trigger.startsWith(text.slice(-k))) return k;
  }
  return 0;
}

/**
 * A whole choice's content (null when it only called tools) and its calls.
 * @param {ToolCallFormat} fmt
 * @param {string} text
 * @returns {{content: string | null, calls: ToolCall[]}}
 */
export function splitToolCalls(fmt, text) {
  const parser = new ToolCallParser(fmt);
  const pieces = [...parser.push(text), ...parser.flush()];
  const content = pieces.map((p) => (p.kind === "content" ? p.text : "")).join("");
  if (parser.calls.length > 0) return { content: content.trim() || null, calls: parser.calls };
  return { content, calls: [] };
}

/**
 * A call as OpenAI streams it: its index among the choice's calls with id, type and name (arguments empty),
 * then the arguments.
 * @param {number} index
 * @param {ToolCall} call
 */
export function callDeltas(index, call) {
  return [
    { index, id: call.id, type: "function", function: { name: call.function.name, arguments: "" } },
    { index, function: { arguments: call.function.arguments } },
  ];
}
