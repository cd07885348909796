import { test } from "node:test";
import assert from "node:assert/strict";
import { fixture } from "./helpers.js";
import { ChatTemplate, messageText } from "../src/chat_template.js";
import { InvalidRequestError } from "../src/errors.js";

const config = fixture("tokenizer_config.json");

test("a ChatML template renders the conversation and the assistant prompt", () => {
  const t = ChatTemplate.fromTokenizerConfig(config);
  const text = t.render([
    { role: "system", content: "Be brief." },
    { role: "user", content: "Hi" },
  ]);
  assert.equal(
    text,
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
  );
  const noPrompt = t.render([{ role: "user", content: "Hi" }], { addGenerationPrompt: false });
  assert.equal(noPrompt, "<|im_start|>user\nHi<|im_end|>\n");
});

test("bos_token / eos_token reach the template (also when given as AddedToken objects)", () => {
  const t = ChatTemplate.fromTokenizerConfig({
    chat_template: "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}",
    bos_token: { content: "<s>", lstrip: false },
    eos_token: "</s>",
  });
  assert.equal(t.render([{ role: "user", content: "a" }]), "<s>a</s>");
});

test("named template lists pick 'default'; a missing template is null", () => {
  const t = ChatTemplate.fromTokenizerConfig({
    chat_template: [
      { name: "tool_use", template: "TOOLS" },
      { name: "default", template: "DEFAULT" },
    ],
  });
  assert.equal(t.render([]), "DEFAULT");
  assert.equal(ChatTemplate.fromTokenizerConfig({}), null);
});

test("content-part arrays are joined into text", () => {
  assert.equal(
    messageText([
      { type: "text", text: "a" },
      { type: "text", text: "b" },
    ]),
    "ab",
  );
  assert.equal(messageText(null), "");
});

test("a template's raise_exception becomes an InvalidRequestError on messages", () => {
  const t = new ChatTemplate(
    "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}",
  );
  assert.throws(
    () => t.render([{ role: "system", content: "x" }]),
    (err) =>
      err instanceof InvalidRequestError && err.param === "messages" && /System role not supported/.test(err.message),
  );
});

test("a request's chat_template_kwargs reach the template (Qwen3's enable_thinking)", () => {
  const source =
    "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:" +
    "{% if enable_thinking is defined and enable_thinking is false %} <think></think>{% endif %}{% endif %}";
  const template = new ChatTemplate(source);
  const messages = [{ role: "user", content: "hi" }];
  assert.equal(template.render(messages), "user: hi\nassistant:");
  assert.equal(template.render(messages, { extra: { enable_thinking: false } }), "user: hi\nassistant: <think></think>");
});
