"""webbuild.engine.scheduler on a numpy stand-in for the model runner: one request's failure stays in that
request, admission goes by KV pages (omitted max_tokens does not serialize requests), and preempted sequences
resume to the same output."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from webbuild.engine import scheduler as scheduler_mod
from webbuild.engine.kv_pages import PAGE_SIZE, PageTable
from webbuild.engine.request import SamplingParams
from webbuild.engine.scheduler import Scheduler
from webbuild.engine.text_stream import StopMatcher

VOCAB = 40
POISON = VOCAB - 1  # never chosen by the model; a logit_bias forces it


class PagedRunner:
    """ModelRunner's interface on the page table it keeps of TVM's paged KV cache (pages of PAGE_SIZE tokens,
    whole pages shared by forks, the partly filled one copied, "full" raising) and a model whose next token
    depends on every token before it, so a sequence resumed from the wrong state gives different text."""

    def __init__(self, pages: int = 9, max_num_sequence: int = 4, window: int = 128, chunk: int = 16) -> None:
        self.total_pages, self.max_num_sequence = pages, max_num_sequence
        self.context_window_size, self.prefill_chunk_size = window, chunk
        self.max_total_sequence_length = pages * PAGE_SIZE
        self.pages = PageTable()
        self.batches: list[tuple[str, int]] = []  # (kind, sequences) per call
        self.prefilled = 0  # tokens prefilled in all
        self.fail_decode = 0  # decode calls that raise next

    def available_pages(self) -> int:
        return self.total_pages - self.pages.pages_in_use

    def _take(self, pages: int) -> None:
        if pages > self.available_pages():
            raise RuntimeError("The KV cache is full. No page can be allocated.")

    # -- sequences
    def add_sequence(self, seq: int) -> None:
        assert seq not in self.pages.tokens
        self.pages.add(seq)

    def fork_sequence(self, parent: int, child: int, position: int) -> None:
        assert child not in self.pages.tokens and position <= self.pages.length(parent)
        self._take(1 if position % PAGE_SIZE else 0)
        self.pages.fork(parent, child, position)

    def remove_sequence(self, seq: int) -> None:
        if seq in self.pages.tokens:
            self.pages.remove(seq)

    # -- forward passes
    def _append(self, seq: int, ids: Sequence[int]) -> np.ndarray:
        now = self.pages.length(seq)
        self._take(-(-(now + len(ids)) // PAGE_SIZE) - -(-now // PAGE_SIZE))
        self.pages.append(seq, ids)
        history = self.pages.tokens[seq]
        assert len(history) <= self.context_window_size
        logits = np.zeros(VOCAB, dtype=np.float32)
        logits[(sum((i + 1) * t for i, t in enumerate(history)) * 7 + len(history)) % (VOCAB - 1)] = 8.0
        return logits

    def prefill_batch(self, chunks: Sequence[tuple[int, Sequence[int]]]) -> np.ndarray:
        self.batches.append(("prefill", len(chunks)))
        assert sum(len(c) for _, c in chunks) <= self.prefill_chunk_size
        self.prefilled += sum(len(c) for _, c in chunks)
        return np.stack([self._append(seq, chunk) for seq, chunk in chunks])

    def decode_batch(self, steps: Sequence[tuple[int, int]]) -> np.ndarray:
        self.batches.append(("decode", len(steps)))
        if self.fail_decode:
            self.fail_decode -= 1
            raise RuntimeError("kernel exploded")
        return np.stack([self._append(seq, [token]) for seq, token in steps])


def decode_text(ids: Sequence[int]) -> str:
    if POISON in ids:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "the tokenizer failed on this request's token")
    return "".join(chr(ord("a") + t % 26) for t in ids)


def run(scheduler: Scheduler, jobs: dict[str, scheduler_mod.Job]) -> dict[str, str | BaseException]:
    """Each job's text (choices joined by |), or the exception its events raised."""
    out: dict[str, str | BaseException] = {}
    for name, job in jobs.items():
        texts = [""] * job.n
        try:
            for event in scheduler.events(job):
                if event[0] == "delta":
                    texts[event[1]] += event[2]
        except Exception as exc:
            out[name] = exc
        else:
            out[name] = "|".join(texts)
    return out


@contextlib.contextmanager
def held(scheduler: Scheduler) -> Iterator[None]:
    """Keeps the scheduler thread busy while the block submits, so everything submitted starts together."""
    gate, busy = threading.Event(), threading.Event()
    threading.Thread(target=scheduler.call, args=(lambda _: busy.set() or gate.wait(10),), daemon=True).start()
    busy.wait(10)
    try:
        yield
    finally:
        gate.set()


def assert_freed(scheduler: Scheduler) -> None:
    """No running sequence holds a page, and evicting the cached prefixes frees every one."""
    runner = scheduler.runner
    assert runner.pages.live_tokens == 0
    assert runner.available_pages() + scheduler.cache.evictable_pages == runner.total_pages
    scheduler.call(lambda _: None, pages=runner.total_pages)  # evicts them all
    assert runner.available_pages() == runner.total_pages and not runner.pages.tokens


def greedy(max_tokens: int = 20, **fields) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0, **fields)


def alone(prompt: list[int], sampling: SamplingParams, n: int = 1, **runner) -> str | BaseException:
    """The request's output on a scheduler of its own with room to spare."""
    scheduler = Scheduler(PagedRunner(**{"pages": 64, "max_num_sequence": 16} | runner), set(), decode_text)
    return run(scheduler, {"x": scheduler.submit(prompt, sampling, sampling.max_tokens, n=n)})["x"]


def test_a_failing_sampler_tokenizer_or_stop_matcher_fails_its_request_only(monkeypatch: pytest.MonkeyPatch):
    class FailingSampler(scheduler_mod.Sampler):
        def __init__(self, seed: int | None = None, choice: int = 0) -> None:
            super().__init__(seed, choice)
            self.fails = seed == 666

        def sample(self, logits, temperature=1.0, top_p=1.0):
            if self.fails:
                raise FloatingPointError("the sampler failed on this request")
            return super().sample(logits, temperature, top_p)

    real_feed = StopMatcher.feed

    def feed(self, piece):
        if "boom" in self.stops:
            raise MemoryError("the stop matcher failed on this request")
        return real_feed(self, piece)

    monkeypatch.setattr(scheduler_mod, "Sampler", FailingSampler)
    monkeypatch.setattr(StopMatcher, "feed", feed)
    runner = PagedRunner(pages=64, max_num_sequence=8)
    scheduler = Scheduler(runner, set(), decode_text)
    requests = {
        "first": ([1, 2, 3], greedy(), 1),
        "sampler": ([4, 5], greedy(seed=666), 1),
        "middle": ([6, 7, 8, 9], greedy(stop=["zzz"]), 2),
        "tokenizer": ([10], greedy(logit_bias={POISON: 100.0}), 1),
        "stop matcher": ([11, 12], greedy(stop=["boom"]), 1),
        "last": ([13] * 5, SamplingParams(max_tokens=20, temperature=0.8, seed=3), 1),
    }
    with held(scheduler):
        jobs = {name: scheduler.submit(p, s, s.max_tokens, n=n) for name, (p, s, n) in requests.items()}
    out = run(scheduler, jobs)
    assert isinstance(out["sampler"], FloatingPointError)
    assert isinstance(out["tokenizer"], UnicodeDecodeError)
    assert isinstance(out["stop matcher"], MemoryError)
    for name in ("first", "middle", "last"):
        prompt, sampling, n = requests[name]
        assert out[name] == alone(prompt, sampling, n), name
        assert len(out[name]) == 20 * n + n - 1
    assert ("decode", 4) in runner.batches  # the failing ones were in the same batches until they failed
    assert_freed(scheduler)  # and every sequence's pages came back (or wait in the prefix cache)


def test_a_failed_kernel_call_fails_the_requests_in_it_and_the_scheduler_goes_on():
    runner = PagedRunner(pages=64)
    scheduler = Scheduler(runner, set(), decode_text)
    runner.fail_decode = 1
    with held(scheduler):
        jobs = {name: scheduler.submit([i + 1, 2], greedy(), 20) for i, name in enumerate(["a", "b"])}
    out = run(scheduler, jobs)
    assert all(isinstance(v, RuntimeError) for v in out.values())
    after = run(scheduler, {"c": scheduler.submit([3, 2], greedy(), 20)})
    assert after["c"] == alone([3, 2], greedy())
    assert_freed(scheduler)


def test_requests_without_max_tokens_are_admitted_by_the_pages_they_use():
    """Four requests whose max_tokens is the rest of a 128-token window, on a cache of one window (`local`): each
    reserving its worst case would run them one at a time."""
    runner = PagedRunner(pages=9, max_num_sequence=4, window=128)
    scheduler = Scheduler(runner, set(), decode_text)
    with held(scheduler):
        jobs = {str(i): scheduler.submit([i + 1] * 5, greedy(123), 123) for i in range(4)}
    out = run(scheduler, jobs)
    assert runner.batches[0] == ("prefill", 4) and ("decode", 4) in runner.batches  # all four run together
    assert all(isinstance(text, str) and len(text) == 123 for text in out.values()), out
    assert scheduler.preemptions > 0  # 4 x 128 tokens never fit 144 slots at once: some waited again
    assert_freed(scheduler)


def test_preempted_sequences_resume_to_the_same_output():
    """A cache too small for everything at once: sequences are preempted, prefill what they had, and go on;
    greedy or seeded, every choice ends as it would alone, including forked choices (n = 2)."""
    runner = PagedRunner(pages=5, max_num_sequence=6, window=64)
    scheduler = Scheduler(runner, set(), decode_text)
    requests = {
        "greedy": ([1, 2, 3], greedy(40), 1),
        "seeded": ([5] * 17, SamplingParams(max_tokens=30, temperature=1.2, seed=9), 1),
        "forked": ([7, 8] * 9, SamplingParams(max_tokens=25, temperature=0.7, seed=4), 2),
        "short": ([9], greedy(5), 1),
    }
    with held(scheduler):
        jobs = {name: scheduler.submit(p, s, s.max_tokens, n=n) for name, (p, s, n) in requests.items()}
    out = run(scheduler, jobs)
    assert scheduler.preemptions > 0
    for name, (prompt, sampling, n) in requests.items():
        assert out[name] == alone(prompt, sampling, n, window=64), name
    assert_freed(scheduler)
