"""webbuild.engine.scheduler on a numpy stand-in for the model runner: one request's failure stays in that
request, admission goes by KV pages (omitted max_tokens does not serialize requests), and preempted sequences
resume to the same output."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

import pytest
from paged_runner import VOCAB, PagedRunner

from webbuild.engine import scheduler as scheduler_mod
from webbuild.engine.request import SamplingParams
from webbuild.engine.scheduler import Scheduler
from webbuild.engine.text_stream import StopMatcher

POISON = VOCAB - 1  # never chosen by the model; a logit_bias forces it


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


def alone(
    prompt: list[int], sampling: SamplingParams, n: int = 1, prefix_cache: bool = True, **runner
) -> str | BaseException:
    """The request's output on a scheduler of its own with room to spare."""
    runner_ = PagedRunner(**{"pages": 64, "max_num_sequence": 16} | runner)
    scheduler = Scheduler(runner_, set(), decode_text, prefix_cache=prefix_cache)
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


# ---- the prefix cache --------------------------------------------------------------------------------------


def turn(scheduler: Scheduler, prompt: list[int], sampling: SamplingParams) -> tuple[str, int, int]:
    """One request alone: its text, the prompt tokens it took from the prefix cache, the tokens it prefilled."""
    runner = scheduler.runner
    before = runner.prefilled
    job = scheduler.submit(prompt, sampling, sampling.max_tokens)
    text, cached = "", -1
    for event in scheduler.events(job):
        if event[0] == "delta":
            text += event[2]
        else:
            cached = event[2].cached_tokens
    return text, cached, runner.prefilled - before


def conversation(scheduler: Scheduler, sampling: SamplingParams, turns: list[list[int]]) -> list[list[int]]:
    """The prompts of a chat on a scheduler with the prefix cache: each one is the previous prompt, the tokens
    the model generated and fed (what its cached KV holds), then the turn's new tokens."""
    prompts, history = [], []
    for new in turns:
        prompts.append(history + new)
        turn(scheduler, prompts[-1], sampling)
        held = scheduler.runner.pages.tokens.values()
        history = max((t for t in held if t[: len(prompts[-1])] == prompts[-1]), key=len)
    return prompts


@pytest.mark.parametrize("sampling", [greedy(12), SamplingParams(max_tokens=12, temperature=1.1, seed=7)])
def test_a_later_turn_prefills_only_what_is_new_and_answers_as_without_the_cache(sampling: SamplingParams):
    with_cache = Scheduler(PagedRunner(pages=32), set(), decode_text)
    prompts = conversation(with_cache, sampling, [[3, 1, 4, 1, 5] * 4, [9, 2, 6], [5, 3, 5, 8, 9, 7]])
    without = Scheduler(PagedRunner(pages=32), set(), decode_text, prefix_cache=False)
    cached_run = [turn(with_cache, p, sampling) for p in prompts]  # the same chat again: all but the last token
    plain_run = [turn(without, p, sampling) for p in prompts]
    assert [text for text, _, _ in cached_run] == [text for text, _, _ in plain_run]
    assert [(c, n) for _, c, n in plain_run] == [(0, len(p)) for p in prompts]
    assert [(c, n) for _, c, n in cached_run] == [(len(p) - 1, 1) for p in prompts]
    assert_freed(with_cache)


def test_a_chat_reuses_its_previous_turns():
    """Each turn's prompt resends the chat: the previous prompt, the reply (the tokens fed, then the last one
    sampled, which never was) and new tokens. The KV of the previous prompt and of the fed tokens is reused."""
    scheduler = Scheduler(PagedRunner(pages=32), set(), decode_text)
    held: list[int] = []
    reused = 0
    for new in ([3, 1, 4, 1, 5] * 4, [9, 2, 6], [5, 3, 5, 8, 9, 7]):
        prompt = held + [0] * bool(held) + new  # 0: the reply's last token as the client sends it back
        _, cached, prefilled = turn(scheduler, prompt, greedy(12))
        assert (cached, prefilled) == (len(held), len(prompt) - len(held))
        reused += cached
        (kept,) = scheduler.runner.pages.tokens.values()  # one cached prefix: this turn's took the last one over
        held = list(kept)
        assert held[: len(prompt)] == prompt and len(held) == len(prompt) + 11  # 12 generated, 11 fed
    metrics = scheduler.metrics()
    assert metrics["kv_cache_used_tokens"] == 0 and metrics["kv_cache_cached_tokens"] == len(held)
    assert metrics["prefix_cache_reused_tokens"] == reused


def test_a_prompt_diverging_mid_prefix_reuses_the_common_part_and_answers_as_without_the_cache():
    scheduler = Scheduler(PagedRunner(pages=32), set(), decode_text)
    shared = [2, 7, 1, 8, 2, 8] * 3  # 18 tokens: a full page and part of the next
    turn(scheduler, shared + [4, 4, 4], greedy(10))
    diverging = shared + [5, 9, 5, 9]
    text, cached, prefilled = turn(scheduler, diverging, greedy(10))
    assert (cached, prefilled) == (len(shared), 4)
    assert text == alone(diverging, greedy(10), prefix_cache=False)
    assert len(scheduler.runner.pages.tokens) == 2  # both stay cached: neither covers the other


def test_cached_prefixes_give_way_to_new_requests_before_any_preemption():
    """Pages only cached prefixes hold count as free: a request that needs nearly the whole cache gets in at once
    and the least recently used prefixes are evicted as it grows; nothing running is preempted for them."""
    runner = PagedRunner(pages=9, max_num_sequence=4, window=128)
    scheduler = Scheduler(runner, set(), decode_text)
    for first in range(4):
        turn(scheduler, [first + 1] * 20, greedy(20))  # each leaves 39 tokens (3 pages) cached
    assert runner.available_pages() < 3
    with held(scheduler):
        jobs = {str(i): scheduler.submit([i + 9] * 5, greedy(60), 60) for i in range(2)}
    out = run(scheduler, jobs)
    assert runner.batches[-60:].count(("decode", 2)) > 50 and scheduler.preemptions == 0  # together throughout
    assert out == {str(i): alone([i + 9] * 5, greedy(60), prefix_cache=False) for i in range(2)}
    assert_freed(scheduler)


def test_a_prompt_ending_on_a_page_boundary_gets_the_page_its_first_decode_needs():
    """The step that prefills a prompt's last chunk also decodes its first token: when the prompt fills its last
    page, that step needs one more page, which here only evicting the cached prefix gives."""
    runner = PagedRunner(pages=4, max_num_sequence=2, window=64)
    scheduler = Scheduler(runner, set(), decode_text)
    turn(scheduler, [1] * 20, greedy(12))  # leaves 31 tokens (2 pages) cached
    text, _, _ = turn(scheduler, [2] * 32, greedy(5))
    assert text == alone([2] * 32, greedy(5), window=64)
    assert len(runner.pages.tokens) == 1  # the old prefix gave way
