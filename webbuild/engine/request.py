"""OpenAI request parsing and response/chunk builders, shared by the Python engine and the REST server.

The browser runtime (web_runtime/openai.js) applies the same field set, defaults and validation rules.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from webbuild.errors import InvalidRequestError, UnsupportedParameterError

_COMMON_FIELDS = frozenset(
    {
        "model", "frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "max_tokens", "n",
        "seed", "stop", "stream", "stream_options", "temperature", "top_p", "user",
    }
)  # fmt: skip
CHAT_FIELDS = _COMMON_FIELDS | {
    "messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice", "parallel_tool_calls",
    "response_format",
}  # fmt: skip
COMPLETION_FIELDS = _COMMON_FIELDS | {"prompt", "echo", "suffix", "best_of"}
ROLES = ("system", "developer", "user", "assistant", "tool")
# The one place roles are renamed: "developer" is OpenAI's newer "system", which chat templates know.
ROLE_ALIASES = {"developer": "system"}
# OpenAI's default for text completions; chat runs until a stop or the context window ends.
COMPLETION_DEFAULT_MAX_TOKENS = 16
# The browser parses JSON into doubles and refuses integers past this; refusing them here keeps both sides equal.
_MAX_SAFE_INTEGER = 2**53 - 1
MAX_CHOICES = 16  # n
MAX_TOP_LOGPROBS = {"chat": 20, "completion": 5}  # chat top_logprobs, completions logprobs (OpenAI's limits)


@dataclass
class SamplingParams:
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    # Applied by both engines to generated tokens (webbuild/engine/sampling.py, web_runtime/sampler.js).
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] | None = None


@dataclass
class Request:
    """A parsed chat or text completion request; exactly one of ``messages``/``prompt`` is set."""

    sampling: SamplingParams
    messages: list[dict[str, str]] | None = None
    prompt: str | list[int] | None = None  # text, or token ids
    model: str | None = None
    stream: bool = False
    include_usage: bool = False
    echo: bool = False  # completions only: the prompt's text starts every choice
    n: int = 1  # choices, each an independent sample of the prompt
    logprobs: bool = False  # a log probability for every generated token of the output
    top_logprobs: int = 0  # and this many most likely alternatives for each


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's entry in ``logprobs``: its text (decoded alone), its natural-log probability,
    the ``top_logprobs`` most likely tokens at its position (best first), and where its text starts in the
    choice's generated text."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()
    offset: int = 0


@dataclass
class Choice:
    """One finished choice: ``logprobs`` is None unless the request asked for them."""

    text: str
    finish_reason: str
    logprobs: list[TokenLogprob] | None = None


def _invalid(param: str | None, message: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def _unsupported(param: str, message: str) -> UnsupportedParameterError:
    return UnsupportedParameterError(message, param=param)


def _same(a: Any, b: Any) -> bool:
    """JavaScript's ``===`` on JSON scalars: unlike Python, ``True`` is not ``1``."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and (
        isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    )


def _is_integer(value: Any) -> bool:
    """JSON ``2.0`` is the integer 2 to the browser, so it is here too."""
    return _is_number(value) and (isinstance(value, int) or value.is_integer())


def _object(value: Any, param: str | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(param, f"{param or 'The request body'} must be a JSON object.")
    return value


def _bool(obj: dict[str, Any], key: str, param: str | None = None) -> bool:
    value = obj.get(key)
    if value is not None and not isinstance(value, bool):
        raise _invalid(param or key, f"{param or key} must be a boolean.")
    return bool(value)


def _number(value: Any, param: str, lo: float, hi: float) -> float:
    if not _is_number(value):
        raise _invalid(param, f"{param} must be a number.")
    if not lo <= value <= hi:
        raise _invalid(param, f"{param} must be between {lo} and {hi}, got {value}.")
    return float(value)


def _integer(value: Any, param: str, lo: int, hi: int | None = None) -> int:
    if not _is_integer(value) or abs(value) > _MAX_SAFE_INTEGER:
        raise _invalid(param, f"{param} must be an integer.")
    if value < lo or (hi is not None and value > hi):
        bounds = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise _invalid(param, f"{param} must be {bounds}, got {value}.")
    return int(value)


def _check_fields(req: dict[str, Any], allowed: frozenset[str]) -> None:
    for key in req:
        if key not in allowed:
            raise _invalid(key, f"Unrecognized request argument supplied: {key}")


def _content(content: Any, role: str, param: str) -> str:
    if content is None:
        if role != "assistant":
            raise _invalid(f"{param}.content", f"{param}.content is required.")
        return ""
    if isinstance(content, list):  # OpenAI content parts; only text ones exist for a text model
        for j, part in enumerate(content):
            part = _object(part, f"{param}.content[{j}]")
            if part.get("type") != "text":
                raise _unsupported(
                    f"{param}.content[{j}].type", f"Content parts of type {part.get('type')!r} are not supported."
                )
            if not isinstance(part.get("text"), str):
                raise _invalid(f"{param}.content[{j}].text", "A text part needs a text string.")
        return "".join(part["text"] for part in content)
    if not isinstance(content, str):
        raise _invalid(f"{param}.content", f"{param}.content must be a string or an array of text parts.")
    return content


def _messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages", "messages must be a non-empty array.")
    out = []
    for i, m in enumerate(messages):
        param = f"messages[{i}]"
        msg = _object(m, param)
        role = msg.get("role")
        if role not in ROLES:
            raise _invalid(f"{param}.role", f"{param}.role must be one of {', '.join(ROLES)}.")
        if msg.get("tool_calls") is not None:
            raise _unsupported(f"{param}.tool_calls", "Tool calls are not supported yet.")
        parsed = {"role": ROLE_ALIASES.get(role, role), "content": _content(msg.get("content"), role, param)}
        if isinstance(msg.get("name"), str):
            parsed["name"] = msg["name"]
        out.append(parsed)
    return out


def _prompt(prompt: Any) -> str | list[int]:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(_is_integer(t) and t >= 0 for t in prompt):
        return [int(t) for t in prompt]
    if isinstance(prompt, list) and len(prompt) > 1 and all(isinstance(p, str | list) for p in prompt):
        raise _unsupported("prompt", "Only one prompt per request is supported.")
    raise _invalid("prompt", "prompt must be a string or a non-empty array of token ids.")


def _stop(stop: Any) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise _invalid("stop", "stop must be a string or an array of strings.")
    if len(stops) > 4:
        raise _invalid("stop", "stop takes at most 4 sequences.")
    return [s for s in stops if s]


def _logit_bias(bias: Any) -> dict[int, float] | None:
    if bias is None:
        return None
    out = {}
    for key, value in _object(bias, "logit_bias").items():
        if not (key.isascii() and key.isdigit()):
            raise _invalid("logit_bias", f"logit_bias keys must be token ids, got {key!r}.")
        out[int(key)] = _number(value, f"logit_bias.{key}", -100, 100)
    return out


def _logprobs(req: dict[str, Any], endpoint: str) -> tuple[bool, int]:
    """(logprobs, top_logprobs): chat takes ``logprobs: true`` plus ``top_logprobs`` 0-20; text completions
    take ``logprobs`` 0-5, the number of alternatives, as OpenAI's legacy API does."""
    value, most = req.get("logprobs"), MAX_TOP_LOGPROBS[endpoint]
    if endpoint == "completion":
        if value is None:
            return False, 0
        return True, _integer(value, "logprobs", 0, most)
    if value is not None and not isinstance(value, bool):
        raise _invalid("logprobs", "logprobs must be a boolean.")
    if req.get("top_logprobs") is None:
        return value is True, 0
    if value is not True:
        raise _invalid("top_logprobs", "top_logprobs is only allowed with logprobs: true.")
    return True, _integer(req["top_logprobs"], "top_logprobs", 0, most)


def _common(req: dict[str, Any], defaults: dict[str, Any], max_field: str, default_max: int | None) -> Request:
    """The fields chat and text completions share, checked in the browser's order so both report one error."""
    if req.get("model") is not None and not isinstance(req["model"], str):
        raise _invalid("model", "model must be a string.")
    if req.get("user") is not None and not isinstance(req["user"], str):  # accepted; it only labels the request
        raise _invalid("user", "user must be a string.")
    n = 1 if req.get("n") is None else _integer(req["n"], "n", 1, MAX_CHOICES)
    stream = _bool(req, "stream")
    include_usage = False
    if req.get("stream_options") is not None:
        if not stream:
            raise _invalid("stream_options", "stream_options is only allowed when stream is true.")
        options = _object(req["stream_options"], "stream_options")
        include_usage = _bool(options, "include_usage", "stream_options.include_usage")

    def number(name: str, fallback: float, lo: float, hi: float) -> float:
        return _number(_first(req.get(name), defaults.get(name), fallback), name, lo, hi)

    sampling = SamplingParams(
        max_tokens=default_max if req.get(max_field) is None else _integer(req[max_field], max_field, 1),
        temperature=number("temperature", 1.0, 0, 2),
        top_p=number("top_p", 1.0, 0, 1),
        presence_penalty=number("presence_penalty", 0.0, -2, 2),
        frequency_penalty=number("frequency_penalty", 0.0, -2, 2),
        logit_bias=_logit_bias(req.get("logit_bias")),
        stop=_stop(req.get("stop")),
        seed=None if req.get("seed") is None else _integer(req["seed"], "seed", -_MAX_SAFE_INTEGER),
    )
    return Request(sampling=sampling, model=req.get("model"), stream=stream, include_usage=include_usage, n=n)


def parse_chat_request(body: Any, defaults: dict[str, Any] | None = None) -> Request:
    """Validates a chat completion body; ``defaults`` (the model's temperature/top_p...) fill absent fields."""
    req = _object(body)
    _check_fields(req, CHAT_FIELDS)
    messages = _messages(req.get("messages"))
    if req.get("tools") not in (None, []):
        raise _unsupported("tools", "Tool calls are not supported by this engine yet.")
    if req.get("tool_choice") not in (None, "none", "auto"):
        raise _unsupported("tool_choice", "Tool calls are not supported by this engine yet.")
    # parallel_tool_calls is accepted and means nothing without tools.
    if req.get("response_format") is not None:
        kind = _object(req["response_format"], "response_format").get("type")
        if kind != "text":
            raise _unsupported("response_format", f"response_format type {kind!r} is not supported yet; use 'text'.")
    logprobs, top_logprobs = _logprobs(req, "chat")
    max_tokens, max_completion = req.get("max_tokens"), req.get("max_completion_tokens")
    if max_tokens is not None and max_completion is not None and not _same(max_tokens, max_completion):
        raise _invalid("max_completion_tokens", "Give max_tokens or max_completion_tokens, not two different values.")
    max_field = "max_tokens" if max_completion is None else "max_completion_tokens"
    request = _common(req, defaults or {}, max_field, None)
    request.messages, request.logprobs, request.top_logprobs = messages, logprobs, top_logprobs
    return request


def parse_completion_request(body: Any, defaults: dict[str, Any] | None = None) -> Request:
    """Validates a text completion body; ``prompt`` is one string or one list of token ids."""
    req = _object(body)
    _check_fields(req, COMPLETION_FIELDS)
    prompt = _prompt(req.get("prompt"))
    if req.get("suffix") not in (None, ""):
        raise _unsupported("suffix", "suffix (insertion) is not supported.")
    if req.get("best_of") is not None and not _same(req["best_of"], 1):
        raise _unsupported("best_of", "best_of must be 1.")
    if req.get("echo") is not None and not isinstance(req["echo"], bool):
        raise _invalid("echo", "echo must be a boolean.")
    logprobs, top_logprobs = _logprobs(req, "completion")
    request = _common(req, defaults or {}, "max_tokens", COMPLETION_DEFAULT_MAX_TOKENS)
    request.prompt, request.echo = prompt, req.get("echo") is True
    request.logprobs, request.top_logprobs = logprobs, top_logprobs
    if request.echo and request.logprobs:
        raise _unsupported(
            "echo", "echo together with logprobs (log probabilities of the prompt) is not supported; drop one of them."
        )
    return request


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


def _token_bytes(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def chat_logprobs(entries: list[TokenLogprob] | None) -> dict[str, Any] | None:
    """A chat choice's ``logprobs``: ``{"content": [{token, logprob, bytes, top_logprobs}]}``."""
    if entries is None:
        return None
    content = [
        {
            "token": e.token,
            "logprob": e.logprob,
            "bytes": _token_bytes(e.token),
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": _token_bytes(t)} for t, lp in e.top],
        }
        for e in entries
    ]
    return {"content": content}


def completion_logprobs(entries: list[TokenLogprob] | None) -> dict[str, Any] | None:
    """A text completion choice's ``logprobs`` in OpenAI's legacy column layout; ``top_logprobs`` maps token
    text to log probability (two tokens that decode to the same text keep the likelier one)."""
    if entries is None:
        return None
    tops = []
    for e in entries:
        top: dict[str, float] = {}
        for text, lp in e.top:
            top.setdefault(text, lp)
        tops.append(top)
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": tops,
        "text_offset": [e.offset for e in entries],
    }


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

    def _logprobs(self, entries: list[TokenLogprob] | None) -> dict[str, Any] | None:
        return chat_logprobs(entries) if self.chat else completion_logprobs(entries)

    def chunk(
        self,
        text: str | None,
        finish_reason: str | None = None,
        role: bool = False,
        *,
        index: int = 0,
        logprobs: list[TokenLogprob] | None = None,
    ) -> dict[str, Any]:
        """One streamed chunk of choice ``index``; ``logprobs`` are the entries of the tokens ``text`` carries."""
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            choice = {
                "index": index,
                "delta": delta,
                "logprobs": self._logprobs(logprobs),
                "finish_reason": finish_reason,
            }
            return self._envelope("chat.completion.chunk", [choice])
        choice = {
            "index": index,
            "text": text or "",
            "logprobs": self._logprobs(logprobs),
            "finish_reason": finish_reason,
        }
        return self._envelope("text_completion", [choice])

    def usage_chunk(self, usage_: dict[str, Any]) -> dict[str, Any]:
        return self._envelope("chat.completion.chunk" if self.chat else "text_completion", []) | {"usage": usage_}

    def complete(self, choices: list[Choice], usage_: dict[str, Any]) -> dict[str, Any]:
        """The whole response; ``choices[i]`` becomes the choice with index i."""
        out = []
        for index, c in enumerate(choices):
            logprobs = self._logprobs(c.logprobs)
            if self.chat:
                message = {"role": "assistant", "content": c.text}
                out.append({"index": index, "message": message, "logprobs": logprobs, "finish_reason": c.finish_reason})
            else:
                out.append({"index": index, "text": c.text, "logprobs": logprobs, "finish_reason": c.finish_reason})
        obj = "chat.completion" if self.chat else "text_completion"
        return self._envelope(obj, out) | {"usage": usage_}
