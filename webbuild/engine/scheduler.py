"""Continuous batching: one thread owns the model runner and interleaves every live request.

Each step prefills waiting prompts in chunks (``prefill_chunk_size`` tokens across sequences, via
``batch_prefill``) and then advances every decoding sequence by one token in a single ``batch_decode``. A new
request joins at the next step instead of waiting for the others to finish; a finished or aborted one frees its
KV pages at once.

A request with ``n`` choices is ``n`` sequences. The first one admitted prefills the prompt; the others fork
its KV cache at the end of the prompt (sharing the prompt's pages) and sample their first token from the same
logits, so the prompt is prefilled once. Only a choice admitted after every sibling has finished prefills the
prompt again.

Admission goes by KV cache pages, not by the worst case: a request takes the pages its prompt needs now (and
one to grow into), so four requests that omit ``max_tokens`` run together instead of each reserving the
whole context window. When the pages run out mid-generation, the latest-submitted sequence is preempted: its
pages are freed and it waits at the head of the queue; once readmitted it prefills its prompt plus the tokens
it had generated and goes on where it stopped (recomputation: its sampler, text and counts were kept).

With the prefix cache (prefix_cache.py), a finished or preempted sequence's KV stays as a cached prefix, and a
new sequence starts from the longest prefix the KV cache holds, prefilling only the rest: the next turn of a
chat, or a preempted sequence whose pages were not needed after all. Cached prefixes count as free pages for
admission and are evicted, least recently used first, before any running sequence is preempted.

A failure is confined to the requests it belongs to: sampling, penalties, logprobs, detokenizing and stop
matching run per sequence, and an exception there ends that sequence's request with the error while the
others in the batch go on. A failed kernel call ends the sequences of that call.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from webbuild.engine.grammar import Constraint, Matcher
from webbuild.engine.model_runner import PAGE_SIZE, ModelRunner
from webbuild.engine.prefix_cache import PrefixCache, Reuse
from webbuild.engine.request import SamplingParams
from webbuild.engine.response import TokenLogprob
from webbuild.engine.sampling import Sampler, apply_penalties, token_logprobs
from webbuild.engine.text_stream import TextStream

log = logging.getLogger("webbuild.engine")


def _pages(tokens: int) -> int:
    return math.ceil(tokens / PAGE_SIZE)


@dataclass
class Generation:
    """Counters of one choice, reported as usage."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache, not prefilled
    submitted: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    finished: float | None = None
    finish_reason: str = "length"


def stats(gens: Sequence[Generation]) -> dict[str, float]:
    """Speeds of one request from the counters of its choices (usage ``extra``)."""
    now = time.perf_counter()
    end = max(g.finished or now for g in gens)
    first = min((g.first_token for g in gens if g.first_token is not None), default=end)
    ttft = first - min(g.submitted for g in gens)
    decode_s = end - first
    decode_steps = sum(max(g.completion_tokens - 1, 0) for g in gens)
    return {
        "prefill_tokens_per_s": round((gens[0].prompt_tokens - gens[0].cached_tokens) / ttft, 2) if ttft > 0 else 0.0,
        "decode_tokens_per_s": round(decode_steps / decode_s, 2) if decode_s > 0 else 0.0,
        "time_to_first_token_s": round(ttft, 4),
    }


@dataclass(eq=False)
class Job:
    """One submitted request: ``n`` choices of one prompt, and the events its reader takes in order:
    ``("delta", index, text, logprobs)``, ``("done", index, Generation)`` per choice, or ``("error", exc)``."""

    prompt: list[int]
    n: int
    cancel: threading.Event | None = None  # set from any thread to abort, like Scheduler.abort
    events: queue.Queue[tuple[Any, ...]] = field(default_factory=queue.Queue)
    aborted: bool = False
    prompt_logits: np.ndarray | None = None  # after the prompt: the first token of every choice comes from them

    @property
    def cancelled(self) -> bool:
        return self.aborted or (self.cancel is not None and self.cancel.is_set())


@dataclass(eq=False)
class _Sequence:
    id: int  # order of submission
    kv: int  # its sequence in the KV cache: a new id, or the cached prefix's it took over
    job: Job
    index: int  # the choice
    sampling: SamplingParams
    max_tokens: int
    text: TextStream
    sampler: Sampler
    gen: Generation
    top_logprobs: int | None  # None: no logprobs asked for
    context: list[int]  # what its KV cache must hold before it decodes: the prompt (+ after a preemption, fed)
    prefilled: int = 0  # tokens of ``context`` in its KV cache
    next_token: int | None = None  # sampled, to be fed by the next decode step
    fed: list[int] = field(default_factory=list)  # generated tokens fed to the model (in its KV cache)
    counts: dict[int, int] = field(default_factory=dict)  # generated token id -> times, for the penalties
    forks: bool = False  # starts from a sibling's KV instead of prefilling the prompt
    logprobs: list[TokenLogprob] = field(default_factory=list)  # per generated token, when asked for
    matcher: Matcher | None = None  # its place in the request's grammar (response_format, tools)
    finished: bool = False

    @property
    def prompt(self) -> list[int]:
        return self.job.prompt


class Scheduler:
    """Owns ``runner``; ``submit`` from any thread, then read the request's events."""

    def __init__(
        self,
        runner: ModelRunner,
        stop_token_ids: set[int],
        decode_text: Callable[[list[int]], str],
        *,
        prefix_cache: bool = True,
    ):
        self.runner = runner
        self.cache = PrefixCache(runner, enabled=prefix_cache)
        self.stop_token_ids = stop_token_ids
        self.decode_text = decode_text
        self._waiting: deque[_Sequence] = deque()
        self._running: list[_Sequence] = []
        self._calls: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._ids = itertools.count(1)
        self.preemptions = 0  # sequences sent back to the queue to free KV pages, since start
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="webbuild-scheduler", daemon=True)
        self._thread.start()

    # -- any thread -----------------------------------------------------------------------------------------
    def submit(
        self,
        prompt: list[int],
        sampling: SamplingParams,
        max_tokens: int,
        *,
        n: int = 1,
        top_logprobs: int | None = None,
        cancel: threading.Event | None = None,
        grammar: Constraint | None = None,
    ) -> Job:
        """Queues ``n`` choices of ``prompt``; ``top_logprobs`` (an int, 0 included) asks for logprobs with
        that many alternatives; setting ``cancel`` aborts the request as ``abort`` does; every choice follows
        ``grammar``."""
        job = Job(prompt=prompt, n=n, cancel=cancel)
        choices = [
            _Sequence(
                id=(seq_id := next(self._ids)),
                kv=seq_id,
                job=job,
                index=index,
                sampling=sampling,
                max_tokens=max_tokens,
                text=TextStream(self.decode_text, sampling.stop),
                sampler=Sampler(sampling.seed, index),
                gen=Generation(prompt_tokens=len(prompt)),
                top_logprobs=top_logprobs,
                context=prompt,
                matcher=grammar.matcher() if grammar is not None else None,
            )
            for index in range(n)
        ]
        with self._wake:
            self._waiting.extend(choices)
            self._wake.notify()
        return job

    def abort(self, job: Job) -> None:
        """Ends every choice of ``job`` still waiting or running (finish reason "abort"); no-op once done."""
        with self._wake:
            job.aborted = True
            self._wake.notify()

    def call(self, fn: Callable[[ModelRunner], Any], pages: int = 0) -> Any:
        """Runs ``fn(runner)`` on the scheduler thread between steps and returns its result, after evicting
        cached prefixes until ``pages`` KV pages are free (as many as ``fn`` will take)."""

        def run() -> Any:
            self.cache.reserve(pages)
            return fn(self.runner)

        future: Future[Any] = Future()
        with self._wake:
            self._calls.append((run, future))
            self._wake.notify()
        return future.result()

    def events(self, job: Job) -> Iterator[tuple[Any, ...]]:
        """The job's ("delta", index, text, logprobs) and ("done", index, Generation) events until every
        choice is done; an error raises here."""
        done = 0
        while done < job.n:
            event = job.events.get()
            if event[0] == "error":
                raise event[1]
            done += event[0] == "done"
            yield event

    def metrics(self) -> dict[str, int]:
        """Sequences running and waiting; KV cache tokens that running sequences hold (a shared page once, a
        copied one per copy) and that only cached prefixes hold (evictable); prompt tokens reused since start."""
        with self._wake:
            return {
                "running": len(self._running),
                "waiting": len(self._waiting),
                "kv_cache_used_tokens": self.runner.pages.live_tokens,
                "kv_cache_cached_tokens": self.runner.pages.cached_tokens,
                "kv_cache_capacity_tokens": self.runner.max_total_sequence_length,
                "prefix_cache_reused_tokens": self.cache.reused_tokens,
            }

    # -- scheduler thread -----------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._wake:
                while not (self._waiting or self._running or self._calls):
                    self._wake.wait()
                calls, self._calls = list(self._calls), deque()
                self._drop_aborted()
            for fn, future in calls:
                try:
                    future.set_result(fn())
                except BaseException as exc:  # handed to the caller
                    future.set_exception(exc)
            with self._wake:
                self._admit()
            if self._running:
                try:
                    self._step()
                except Exception as exc:  # a bug outside the per-sequence guards: fail what runs, keep serving
                    log.error("scheduler step failed", exc_info=exc)
                    for seq in list(self._running):
                        self._finish(seq, error=exc)

    def _drop_aborted(self) -> None:
        for seq in [s for s in self._waiting if s.job.cancelled]:
            self._waiting.remove(seq)
            seq.finished = True
            seq.gen.finish_reason = "abort"
            seq.job.events.put(("done", seq.index, seq.gen))
        for seq in [s for s in self._running if s.job.cancelled]:
            seq.gen.finish_reason = "abort"
            self._finish(seq)

    def _admit(self) -> None:
        """Admits waiting sequences in order while sequence slots and KV pages last. Each needs the pages of
        its prompt that the KV cache does not hold yet (one, for the partly filled last page, if it forks a
        running sibling's prompt) and one to grow into, beside what the running ones still need for their
        prompts; pages only cached prefixes hold count as free, except those of the one it starts from. The
        first one always gets in (a context window always fits the cache). Preemption (``_make_room``) settles
        what growth later needs."""
        while self._waiting and len(self._running) < self.runner.max_num_sequence:
            seq = self._waiting[0]
            forks = seq.next_token is None and any(s.job is seq.job for s in self._running)
            # A fresh prompt prefills at least its last token: its logits give the first generated token.
            reuse = Reuse() if forks else self.cache.match(seq.context, len(seq.context) - (seq.next_token is None))
            shared = reuse.length // PAGE_SIZE
            cost = (1 if forks else _pages(len(seq.context)) - shared) + 1
            # A cached prefix it starts from is not evicted for it: its pages do not count as free.
            held = _pages(self.runner.pages.length(reuse.source)) if reuse.cached else 0
            free = self.runner.available_pages() + self.cache.evictable_pages - held
            free -= sum(self._promised(s) + 1 for s in self._running)
            if self._running and cost > free:
                break
            self._waiting.popleft()
            seq.forks = forks
            if not forks:  # a fork adds its sequence when it happens
                try:
                    seq.kv, seq.prefilled = self.cache.start(seq.kv, reuse)
                except Exception as exc:
                    self._finish(seq, error=exc)
                    continue
                if seq.next_token is None and not seq.fed:  # still on its prompt (a preempted one may be again)
                    seq.gen.cached_tokens = max(seq.gen.cached_tokens, seq.prefilled)
            self._running.append(seq)

    def _promised(self, seq: _Sequence) -> int:
        """KV pages an admitted sequence will still take for its prompt (or its fork)."""
        if seq.forks and not seq.prefilled:
            return 1
        if seq.prefilled >= len(seq.context):
            return 0
        return _pages(len(seq.context)) - _pages(self.runner.pages.length(seq.kv))

    def _prefill_plan(self) -> list[tuple[_Sequence, list[int]]]:
        """This step's prefill chunks: ``prefill_chunk_size`` tokens in all, in admission order."""
        budget = self.runner.prefill_chunk_size
        chunks: list[tuple[_Sequence, list[int]]] = []
        for seq in self._running:
            if budget and not seq.forks and seq.prefilled < len(seq.context):
                chunk = seq.context[seq.prefilled : seq.prefilled + budget]
                chunks.append((seq, chunk))
                budget -= len(chunk)
        return chunks

    def _decoding(self) -> list[_Sequence]:
        return [s for s in self._running if s.next_token is not None and s.prefilled == len(s.context)]

    def _pages_needed(self) -> int:
        """New KV pages this step may take: a fork copies the partly filled page of the prompt (or, at a page
        boundary, its first token starts one); a prefill chunk crosses into new pages, and when it ends its
        sequence's context, that sequence decodes its next token in this step too; a decode starts a page."""
        length = self.runner.pages.length
        need = sum(1 for s in self._running if s.forks and not s.prefilled)
        for seq, chunk in self._prefill_plan():
            now = length(seq.kv)
            need += _pages(now + len(chunk) + (seq.prefilled + len(chunk) == len(seq.context))) - _pages(now)
        need += sum(1 for s in self._decoding() if length(s.kv) % PAGE_SIZE == 0)
        return need

    def _make_room(self) -> None:
        """Evicts cached prefixes, then preempts the latest-submitted sequences, until this step's new pages fit
        in the cache."""
        while self._pages_needed() > self.runner.available_pages():
            if not self.cache.evict():
                if len(self._running) < 2:
                    return
                self._preempt(max(self._running, key=lambda s: s.id))

    def _preempt(self, seq: _Sequence) -> None:
        """Hands ``seq``'s KV to the prefix cache (evicted there if its pages are needed) and queues it first;
        readmitted, it prefills what of its prompt and fed tokens the KV cache no longer holds, then decodes its
        pending token as if nothing happened."""
        with self._wake:
            self._running.remove(seq)
            self._waiting.appendleft(seq)
        self.cache.keep(seq.kv)
        seq.context = seq.prompt + seq.fed
        seq.prefilled, seq.forks = 0, False
        seq.kv = next(self._ids)  # a new KV sequence: the old one may stay cached under its id
        self.preemptions += 1

    def _guarded(self, seqs: Sequence[_Sequence], fn: Callable[[], Any]) -> None:
        """Runs ``fn``; if it raises, the error ends ``seqs`` (their requests), not the step."""
        try:
            fn()
        except Exception as exc:
            for seq in seqs:
                self._finish(seq, error=exc)

    def _step(self) -> None:
        self._make_room()
        for seq in list(self._running):  # choices admitted beside a sibling that already has the prompt
            if seq.forks and not seq.prefilled:
                if (source := self._prompt_holder(seq.job)) is not None:
                    self._guarded([seq], functools.partial(self._fork, source, seq))
                elif not any(s.job is seq.job and not s.forks for s in self._running):
                    # Its siblings finished or were preempted before it could fork: it prefills the prompt itself.
                    seq.forks = False
                    self._guarded([seq], functools.partial(self.runner.add_sequence, seq.kv))
        chunks = self._prefill_plan()
        if chunks:
            try:
                logits = self.runner.prefill_batch([(seq.kv, chunk) for seq, chunk in chunks])
            except Exception as exc:
                for seq, _ in chunks:
                    self._finish(seq, error=exc)
            else:
                for (seq, chunk), row in zip(chunks, logits, strict=True):
                    seq.prefilled += len(chunk)
                    if seq.prefilled == len(seq.context) and seq.next_token is None:  # not a resumed sequence
                        seq.job.prompt_logits = row
                        # Fork the waiting siblings before this choice samples: it may finish and free the prompt.
                        for sibling in [s for s in self._running if s.job is seq.job and s.forks and not s.prefilled]:
                            self._guarded([sibling], functools.partial(self._fork, seq, sibling))
                        self._guarded([seq], functools.partial(self._emit, seq, row))
        decoding = self._decoding()
        if decoding:
            try:
                logits = self.runner.decode_batch([(s.kv, s.next_token) for s in decoding])
            except Exception as exc:
                for seq in decoding:
                    self._finish(seq, error=exc)
                return
            for seq, row in zip(decoding, logits, strict=True):
                seq.fed.append(seq.next_token)
                self._guarded([seq], functools.partial(self._emit, seq, row))

    def _prompt_holder(self, job: Job) -> _Sequence | None:
        """A running sequence of ``job`` whose KV cache holds the whole prompt."""
        return next((s for s in self._running if s.job is job and s.prefilled >= len(job.prompt)), None)

    def _fork(self, source: _Sequence, seq: _Sequence) -> None:
        assert seq.job.prompt_logits is not None  # set when the prompt was prefilled
        self.runner.fork_sequence(source.kv, seq.kv, len(seq.prompt))
        seq.prefilled = len(seq.prompt)
        self._emit(seq, seq.job.prompt_logits)

    def _emit(self, seq: _Sequence, logits: np.ndarray) -> None:
        """Samples the next token of ``seq`` and reports it; finishes the sequence when it is done."""
        seq.next_token = None
        sampling = seq.sampling
        if sampling.logit_bias or sampling.presence_penalty or sampling.frequency_penalty:
            logits = apply_penalties(
                logits, seq.counts, sampling.logit_bias, sampling.presence_penalty, sampling.frequency_penalty
            )
        if seq.matcher is not None:
            logits = seq.matcher.mask(logits)
        token = seq.sampler.sample(logits, sampling.temperature, sampling.top_p)
        seq.counts[token] = seq.counts.get(token, 0) + 1
        gen = seq.gen
        if gen.first_token is None:
            gen.first_token = time.perf_counter()
        if token in self.stop_token_ids:
            gen.finish_reason = "stop"
            return self._finish(seq)
        if seq.matcher is not None:
            seq.matcher.accept(token)
        gen.completion_tokens += 1
        if seq.top_logprobs is not None:
            logprob, top = token_logprobs(logits, token, seq.top_logprobs)
            text = self.decode_text
            seq.logprobs.append(TokenLogprob(text([token]), logprob, tuple((text([t]), lp) for t, lp in top)))
        self._report(seq, seq.text.push(token))
        if seq.text.stopped:
            gen.finish_reason = "stop"
        elif gen.completion_tokens >= seq.max_tokens:
            gen.finish_reason = "length"
        else:
            seq.next_token = token
            return None
        return self._finish(seq)

    def _report(self, seq: _Sequence, delta: str) -> None:
        """Sends ``delta`` with the logprobs of the tokens whose text it completes."""
        logprobs = None
        if seq.top_logprobs is not None:
            logprobs = [replace(seq.logprobs[i], offset=offset) for i, offset in seq.text.released()]
        if delta or logprobs:
            seq.job.events.put(("delta", seq.index, delta, logprobs))

    def _finish(self, seq: _Sequence, error: Exception | None = None) -> None:
        """Ends ``seq`` once: hands its KV to the prefix cache (frees it after an error, which may have left it
        half written) and sends its last text and "done", or ``error``."""
        if seq.finished:
            return
        seq.finished = True
        with self._wake:
            if seq in self._running:
                self._running.remove(seq)
        try:
            if error is None:
                self.cache.keep(seq.kv)
            else:
                self.runner.remove_sequence(seq.kv)
        except Exception as exc:  # nothing more to free for it; the server goes on
            log.error("freeing sequence %s failed", seq.kv, exc_info=exc)
        seq.gen.finished = time.perf_counter()
        if error is None:
            try:
                self._report(seq, seq.text.flush())
            except Exception as exc:
                error = exc
        if error is not None:
            seq.job.events.put(("error", error))
            return
        seq.job.events.put(("done", seq.index, seq.gen))
