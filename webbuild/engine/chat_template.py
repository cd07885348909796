"""Renders a model's Hugging Face chat template (Jinja) the way transformers does, in a sandbox."""

from __future__ import annotations

from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from webbuild.errors import InvalidRequestError, UnsupportedError


def _raise(message: str) -> None:
    raise InvalidRequestError(message, param="messages")


def _token_text(value: Any) -> str:
    if isinstance(value, dict):  # tokenizer_config may store AddedToken dicts
        return str(value.get("content", ""))
    return "" if value is None else str(value)


class ChatTemplate:
    def __init__(self, tokenizer_config: dict[str, Any]) -> None:
        source = tokenizer_config.get("chat_template")
        if isinstance(source, list):  # named templates: take the default one
            source = next((t["template"] for t in source if t.get("name") == "default"), None)
        if not source:
            raise UnsupportedError("the model has no chat template; use text completions instead")
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        self.template = env.from_string(source)
        self.special = {k: _token_text(tokenizer_config.get(k)) for k in ("bos_token", "eos_token", "pad_token")}

    def render(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        extra: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        """``extra``: a request's ``chat_template_kwargs`` (``enable_thinking`` ...), as transformers passes them;
        ``tools``: OpenAI's tool list, which templates that support tools read as ``tools``."""
        variables = {**(extra or {}), **self.special}
        if tools:
            variables["tools"] = tools
        try:
            return self.template.render(messages=messages, add_generation_prompt=add_generation_prompt, **variables)
        except TemplateError as exc:
            raise InvalidRequestError(f"the chat template failed on these messages: {exc}", param="messages") from exc
