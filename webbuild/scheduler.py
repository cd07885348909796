"""Continuous batching: one thread owns the model runner and interleaves every live request.

Each step prefills waiting prompts in chunks (``prefill_chunk_size`` tokens across sequences, via
``batch_prefill``) and then advances every decoding sequence by one token in a single ``batch_decode``. A new
request joins at the next step instead of waiting for the others to finish; a finished or aborted one frees its
KV pages at once.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .model_runner import ModelRunner
from .openai_api import SamplingParams
from .sampling import Sampler, apply_penalties
from .text_stream import TextStream


@dataclass
class Generation:
    """Counters of one request, reported as usage."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    submitted: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    finished: float | None = None
    finish_reason: str = "length"

    def stats(self) -> dict[str, float]:
        end = self.finished or time.perf_counter()
        ttft = (self.first_token or end) - self.submitted
        decode_s = end - (self.first_token or end)
        decode_steps = max(self.completion_tokens - 1, 0)
        return {
            "prefill_tokens_per_s": round(self.prompt_tokens / ttft, 2) if ttft > 0 else 0.0,
            "decode_tokens_per_s": round(decode_steps / decode_s, 2) if decode_s > 0 else 0.0,
            "time_to_first_token_s": round(ttft, 4),
        }


@dataclass
class _Sequence:
    id: int
    prompt: list[int]
    sampling: SamplingParams
    max_tokens: int
    text: TextStream
    sampler: Sampler
    gen: Generation
    events: queue.Queue[tuple[str, Any]] = field(default_factory=queue.Queue)
    prefilled: int = 0
    next_token: int | None = None  # sampled, to be fed by the next decode step
    counts: dict[int, int] = field(default_factory=dict)  # generated token id -> times, for the penalties
    aborted: bool = False

    @property
    def reserved(self) -> int:
        return len(self.prompt) + self.max_tokens


class Scheduler:
    """Owns ``runner``; ``submit`` from any thread, then read the request's events."""

    def __init__(self, runner: ModelRunner, stop_token_ids: set[int], decode_text: Callable[[list[int]], str]):
        self.runner = runner
        self.stop_token_ids = stop_token_ids
        self.decode_text = decode_text
        self._waiting: deque[_Sequence] = deque()
        self._running: list[_Sequence] = []
        self._calls: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._ids = itertools.count(1)
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="webbuild-scheduler", daemon=True)
        self._thread.start()

    # -- any thread -----------------------------------------------------------------------------------------
    def submit(self, prompt: list[int], sampling: SamplingParams, max_tokens: int) -> _Sequence:
        seq = _Sequence(
            id=next(self._ids),
            prompt=prompt,
            sampling=sampling,
            max_tokens=max_tokens,
            text=TextStream(self.decode_text, sampling.stop),
            sampler=Sampler(sampling.seed),
            gen=Generation(prompt_tokens=len(prompt)),
        )
        with self._wake:
            self._waiting.append(seq)
            self._wake.notify()
        return seq

    def abort(self, seq: _Sequence) -> None:
        with self._wake:
            seq.aborted = True
            self._wake.notify()

    def call(self, fn: Callable[[ModelRunner], Any]) -> Any:
        """Runs ``fn(runner)`` on the scheduler thread between steps and returns its result."""
        future: Future[Any] = Future()
        with self._wake:
            self._calls.append((lambda: fn(self.runner), future))
            self._wake.notify()
        return future.result()

    def events(self, seq: _Sequence) -> Iterator[tuple[str, Any]]:
        """("delta", text)... then ("done", Generation) or ("error", exception)."""
        while True:
            kind, value = seq.events.get()
            yield kind, value
            if kind != "delta":
                return

    def metrics(self) -> dict[str, int]:
        with self._wake:
            return {
                "running": len(self._running),
                "waiting": len(self._waiting),
                "kv_cache_used_tokens": self.runner.used_tokens,
                "kv_cache_capacity_tokens": self.runner.max_total_sequence_length,
            }

    # -- scheduler thread -----------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._wake:
                while not (self._waiting or self._running or self._calls):
                    self._wake.wait()
                calls, self._calls = list(self._calls), deque()
                self._drop_aborted()
                self._admit()
            for fn, future in calls:
                try:
                    future.set_result(fn())
                except BaseException as exc:  # handed to the caller
                    future.set_exception(exc)
            if self._running:
                try:
                    self._step()
                except Exception as exc:  # a failed kernel call fails the requests in it, not the server
                    for seq in list(self._running):
                        self._finish(seq, error=exc)

    def _drop_aborted(self) -> None:
        for seq in [s for s in self._waiting if s.aborted]:
            self._waiting.remove(seq)
            seq.gen.finish_reason = "abort"
            seq.events.put(("done", seq.gen))
        for seq in [s for s in self._running if s.aborted]:
            seq.gen.finish_reason = "abort"
            self._finish(seq)

    def _admit(self) -> None:
        reserved = sum(s.reserved for s in self._running)
        while self._waiting and len(self._running) < self.runner.max_num_sequence:
            seq = self._waiting[0]
            if self._running and reserved + seq.reserved > self.runner.max_total_sequence_length:
                break
            self._waiting.popleft()
            self.runner.add_sequence(seq.id)
            self._running.append(seq)
            reserved += seq.reserved

    def _step(self) -> None:
        budget = self.runner.prefill_chunk_size
        chunks: list[tuple[_Sequence, list[int]]] = []
        for seq in self._running:
            if budget and seq.prefilled < len(seq.prompt):
                chunk = seq.prompt[seq.prefilled : seq.prefilled + budget]
                chunks.append((seq, chunk))
                budget -= len(chunk)
        if chunks:
            logits = self.runner.prefill_batch([(seq.id, chunk) for seq, chunk in chunks])
            for (seq, chunk), row in zip(chunks, logits, strict=True):
                seq.prefilled += len(chunk)
                if seq.prefilled == len(seq.prompt):
                    self._emit(seq, row)
        decoding = [s for s in self._running if s.next_token is not None]
        if decoding:
            logits = self.runner.decode_batch([(s.id, s.next_token) for s in decoding])
            for seq, row in zip(decoding, logits, strict=True):
                self._emit(seq, row)

    def _emit(self, seq: _Sequence, logits: np.ndarray) -> None:
        """Samples the next token of ``seq`` and reports it; finishes the sequence when it is done."""
        seq.next_token = None
        sampling = seq.sampling
        if sampling.logit_bias or sampling.presence_penalty or sampling.frequency_penalty:
            logits = apply_penalties(
                logits, seq.counts, sampling.logit_bias, sampling.presence_penalty, sampling.frequency_penalty
            )
        token = seq.sampler.sample(logits, sampling.temperature, sampling.top_p)
        seq.counts[token] = seq.counts.get(token, 0) + 1
        gen = seq.gen
        if gen.first_token is None:
            gen.first_token = time.perf_counter()
        if token in self.stop_token_ids:
            gen.finish_reason = "stop"
            return self._finish(seq)
        gen.completion_tokens += 1
        delta = seq.text.push(token)
        if delta:
            seq.events.put(("delta", delta))
        if seq.text.stopped:
            gen.finish_reason = "stop"
        elif gen.completion_tokens >= seq.max_tokens:
            gen.finish_reason = "length"
        else:
            seq.next_token = token
            return None
        return self._finish(seq)

    def _finish(self, seq: _Sequence, error: Exception | None = None) -> None:
        with self._wake:
            if seq in self._running:
                self._running.remove(seq)
        self.runner.remove_sequence(seq.id)
        seq.gen.finished = time.perf_counter()
        if error is not None:
            seq.events.put(("error", error))
            return
        tail = seq.text.flush()
        if tail:
            seq.events.put(("delta", tail))
        seq.events.put(("done", seq.gen))
