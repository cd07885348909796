"""A scripted stand-in for ``webbuild.engine.Engine`` with the same contract, for fast API tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from webbuild.engine.request import Request, check_model_limits
from webbuild.engine.response import Choice, ResponseBuilder, usage

WORDS = ["Paris", " is", " the", " capital", " of", " France", "."]
PROMPT_TOKENS = 5  # every prompt counts as this many tokens


class FakeStream:
    """Chunks of one request; ``close()`` records the abort like the real engine frees the sequence."""

    def __init__(self, engine: FakeEngine, chunks: Iterator[dict[str, Any]]) -> None:
        self.engine, self.chunks = engine, chunks

    def __iter__(self) -> FakeStream:
        return self

    def __next__(self) -> dict[str, Any]:
        return next(self.chunks)

    def close(self) -> None:
        self.engine.closed.set()


@dataclass
class FakeEngine:
    """Replies with ``WORDS`` (cut by max_tokens); ``delay`` seconds per chunk; ``fail_after`` chunks then
    ``failure`` is raised; ``endless`` streams until closed, and a non-streamed request waits until aborted;
    ``create_error`` is raised by ``create``. Requests pass the engine's model-dependent checks, every prompt
    counting ``PROMPT_TOKENS``."""

    model_name: str = "fake-model-q4f32_1"
    delay: float = 0.0
    fail_after: int | None = None
    failure: Exception = field(default_factory=lambda: RuntimeError("kernel exploded"))
    endless: bool = False
    create_error: Exception | None = None
    requests: list[Request] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)
    busy: int = 0  # threads inside the engine's (simulated) work now, and the most at once
    max_busy: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    model: Any = field(
        default_factory=lambda: SimpleNamespace(
            defaults={"temperature": 0.7, "top_p": 0.95},
            cfg=SimpleNamespace(context_window_size=64, vocab_size=100),
        )
    )

    def _work(self) -> None:
        with self._lock:
            self.busy += 1
            self.max_busy = max(self.max_busy, self.busy)
        time.sleep(self.delay)
        with self._lock:
            self.busy -= 1

    def metrics(self) -> dict[str, int]:
        return {
            "running": 1,
            "waiting": 2,
            "kv_cache_used_tokens": 48,
            "kv_cache_cached_tokens": 32,
            "kv_cache_capacity_tokens": 128,
            "prefix_cache_reused_tokens": 7,
        }

    def create(
        self, request: Request, abort: threading.Event | None = None
    ) -> dict[str, Any] | Iterator[dict[str, Any]]:
        self.requests.append(request)
        if self.create_error is not None:
            raise self.create_error
        cfg = self.model.cfg
        request = check_model_limits(
            request, PROMPT_TOKENS, context_window_size=cfg.context_window_size, vocab_size=cfg.vocab_size
        )
        builder = ResponseBuilder(model=self.model_name, chat=request.messages is not None)
        words = WORDS[: request.sampling.max_tokens or len(WORDS)]
        finish = "length" if len(words) < len(WORDS) else "stop"
        used = usage(PROMPT_TOKENS, len(words), {"time_to_first_token_s": 0.01})
        if not request.stream:
            if self.endless:
                assert abort is not None and abort.wait(30), "the request was never aborted"
                self.closed.set()
                words, finish = [], "abort"
            return builder.complete([Choice("".join(words), finish)], used)
        return FakeStream(self, self._chunks(builder, words, finish, used, request.include_usage))

    def _chunks(self, builder: ResponseBuilder, words: list[str], finish: str, used: dict, with_usage: bool):
        if builder.chat:
            yield builder.chunk(None, role=True)
        n = 0
        while True:
            for word in words:
                if self.fail_after is not None and n >= self.fail_after:
                    raise self.failure
                self._work()
                n += 1
                yield builder.chunk(word)
            if not self.endless:
                break
        yield builder.chunk(None if builder.chat else "", finish_reason=finish)
        if with_usage:
            yield builder.usage_chunk(used)
