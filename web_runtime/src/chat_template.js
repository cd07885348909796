// Chat prompts from the model's own Hugging Face chat template (tokenizer_config.json `chat_template`),
// rendered with @huggingface/jinja, so the browser builds exactly the prompt the model was trained on.

import { Template } from "./vendor.js";
import { InvalidRequestError } from "./errors.js";
import { specialTokenText } from "./tokenizer.js";

/**
 * @typedef {{role: string, content: string | Array<{type: string, text?: string}> | null, name?: string, tool_calls?: Array<{id: string, type: string, function: {name: string, arguments: Record<string, any>}}>, tool_call_id?: string}} ChatMessage
 */

export class ChatTemplate {
  /**
   * @param {string} source  the Jinja template text
   * @param {{bosToken?: string | null, eosToken?: string | null}} [specialTokens]
   */
  constructor(source, { bosToken = null, eosToken = null } = {}) {
    this.source = source;
    this.template = new Template(source);
    this.bosToken = bosToken ?? "";
    this.eosToken = eosToken ?? "";
  }

  /**
   * The template a tokenizer_config.json carries: a string, or a list of named templates ("default" wins).
   * @param {Record<string, any>} config
   * @returns {ChatTemplate | null}  null when the model has no chat template (text completion only)
   */
  static fromTokenizerConfig(config) {
    let source = config.chat_template;
    if (Array.isArray(source)) {
      const named = source.find((t) => t && t.name === "default") ?? source[0];
      source = named?.template;
    } else if (source && typeof source === "object") {
      source = source.default ?? Object.values(source)[0];
    }
    if (typeof source !== "string" || source.length === 0) return null;
    return new ChatTemplate(source, {
      bosToken: specialTokenText(config.bos_token),
      eosToken: specialTokenText(config.eos_token),
    });
  }

  /**
   * @param {ChatMessage[]} messages
   * @param {{addGenerationPrompt?: boolean, extra?: Record<string, unknown>, tools?: Record<string, any>[] | null}} [options]
   *   `extra`: a request's chat_template_kwargs; `tools`: OpenAI's tool list, which templates that support
   *   tools read as `tools`
   * @returns {string}
   */
  render(messages, { addGenerationPrompt = true, extra = {}, tools = null } = {}) {
    const plain = messages.map((m) => ({ ...m, content: messageText(m.content) }));
    try {
      return this.template.render({
        ...extra,
        ...(tools?.length ? { tools } : {}),
        messages: plain,
        add_generation_prompt: addGenerationPrompt,
        bos_token: this.bosToken,
        eos_token: this.eosToken,
      });
    } catch (err) {
      // Templates reject conversations they do not support with raise_exception(...), e.g. a system
      // message in a template without one, or roles that do not alternate.
      const reason = err instanceof Error ? err.message : String(err);
      throw new InvalidRequestError(`The model's chat template rejected these messages: ${reason}`, {
        param: "messages",
        cause: err,
      });
    }
  }
}

/**
 * Message content as text: strings pass through, content-part arrays are joined, null is "".
 * @param {ChatMessage["content"]} content
 * @returns {string}
 */
export function messageText(content) {
  if (content == null) return "";
  if (typeof content === "string") return content;
  return content.map((part) => (part.type === "text" ? (part.text ?? "") : "")).join("");
}
