"""OpenAI request parsing and response/chunk builders, shared by the Python engine and the REST server.

The browser runtime (web_runtime/openai.js) applies the same field set, defaults and validation rules.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidRequestError

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class SamplingParams:
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass
class Request:
    """A parsed chat or text completion request; exactly one of ``messages``/``prompt`` is set."""

    sampling: SamplingParams
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    model: str | None = None
    stream: bool = False
    include_usage: bool = False


def _number(body: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequestError(f"'{name}' must be a number", param=name)
    if not lo <= value <= hi:
        raise InvalidRequestError(f"'{name}' must be between {lo} and {hi}, got {value}", param=name)
    return float(value)


def _optional_int(body: dict[str, Any], name: str, lo: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(f"'{name}' must be an integer", param=name)
    if value < lo:
        raise InvalidRequestError(f"'{name}' must be at least {lo}, got {value}", param=name)
    return value


def _stop(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4:
        return list(stop)
    raise InvalidRequestError("'stop' must be a string or a list of at most 4 strings", param="stop")


def _sampling(body: dict[str, Any], defaults: dict[str, Any]) -> SamplingParams:
    return SamplingParams(
        max_tokens=_optional_int(body, "max_tokens", 1),
        temperature=_number(body, "temperature", defaults.get("temperature", 1.0), 0.0, 2.0),
        top_p=_number(body, "top_p", defaults.get("top_p", 1.0), 0.0, 1.0) or 1e-9,
        stop=_stop(body),
        seed=_optional_int(body, "seed", -(2**63)),
    )


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty list", param="messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise InvalidRequestError(f"messages[{i}].role must be one of {', '.join(ROLES)}", param="messages")
        content = m.get("content")
        if isinstance(content, list):  # OpenAI content parts: only text is meaningful here
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if not isinstance(content, str):
            raise InvalidRequestError(f"messages[{i}].content must be a string", param="messages")
        out.append({"role": m["role"], "content": content})
    return out


def _common(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequestError("'stream' must be a boolean", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise InvalidRequestError("'stream_options' must be an object", param="stream_options")
    n = body.get("n", 1)
    if n != 1:
        raise InvalidRequestError("only n=1 is supported", param="n")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequestError("'model' must be a string", param="model")
    return {"model": model, "stream": stream, "include_usage": bool(options.get("include_usage", False))}


def parse_chat_request(body: Any, defaults: dict[str, Any] | None = None) -> Request:
    common = _common(body)
    return Request(sampling=_sampling(body, defaults or {}), messages=_messages(body), **common)


def parse_completion_request(body: Any, defaults: dict[str, Any] | None = None) -> Request:
    common = _common(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise InvalidRequestError("'prompt' must be a non-empty string", param="prompt")
    return Request(sampling=_sampling(body, defaults or {}), prompt=prompt, **common)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if extra:
        out["extra"] = extra
    return out


@dataclass
class ResponseBuilder:
    """Builds the response objects of one request, sharing its id, model and creation time."""

    model: str
    chat: bool
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.id = self.id or new_id("chatcmpl" if self.chat else "cmpl")

    def _envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": choices}

    def chunk(self, text: str | None, finish_reason: str | None = None, role: bool = False) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return self._envelope("chat.completion.chunk", [choice])
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        return self._envelope("text_completion", [choice])

    def usage_chunk(self, usage_: dict[str, Any]) -> dict[str, Any]:
        return self._envelope("chat.completion.chunk" if self.chat else "text_completion", []) | {"usage": usage_}

    def complete(self, text: str, finish_reason: str, usage_: dict[str, Any]) -> dict[str, Any]:
        if self.chat:
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
            return self._envelope("chat.completion", [choice]) | {"usage": usage_}
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        return self._envelope("text_completion", [choice]) | {"usage": usage_}
