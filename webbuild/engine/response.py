"""OpenAI response and streamed-chunk builders, shared by the Python engine and the REST server.

The browser runtime (web_runtime/openai.js) builds the same shapes.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any


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
    """One finished choice: ``logprobs`` is None unless the request asked for them; a chat choice that called
    tools has ``tool_calls`` (and ``text`` None when it said nothing else)."""

    text: str | None
    finish_reason: str
    logprobs: list[TokenLogprob] | None = None
    tool_calls: list[dict[str, Any]] | None = None


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(
    prompt_tokens: int, completion_tokens: int, extra: dict[str, Any] | None = None, *, cached_tokens: int | None = None
) -> dict[str, Any]:
    """OpenAI's ``usage``; ``cached_tokens``, the prompt tokens whose KV was reused rather than prefilled, goes
    in ``prompt_tokens_details`` as OpenAI reports it."""
    out: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
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
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """One streamed chunk of choice ``index``; ``logprobs`` are the entries of the tokens ``text`` carries;
        ``tool_calls`` are OpenAI's call deltas (``index``, then ``id``/``type``/name, then arguments)."""
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            if tool_calls:
                delta["tool_calls"] = tool_calls
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
                message: dict[str, Any] = {"role": "assistant", "content": c.text}
                if c.tool_calls:
                    message["tool_calls"] = c.tool_calls
                out.append({"index": index, "message": message, "logprobs": logprobs, "finish_reason": c.finish_reason})
            else:
                out.append(
                    {"index": index, "text": c.text or "", "logprobs": logprobs, "finish_reason": c.finish_reason}
                )
        obj = "chat.completion" if self.chat else "text_completion"
        return self._envelope(obj, out) | {"usage": usage_}
