"""The CPU engine runs the compiled definition and must agree with an independent numpy Llama."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from llama_reference import llama_logits
from spm_tiny import CHAT_TEMPLATE, GEMMA, add_tokenizer, tiny_model, vocabulary
from tiny_llama import tiny_llama_model, write_gguf

from webbuild.build.prepare import prepare_model
from webbuild.build.quantize.params import role_of
from webbuild.build.source import load_source
from webbuild.engine.engine import Engine, EngineConfig
from webbuild.engine.kv_pages import PAGE_SIZE
from webbuild.errors import ContextLengthExceededError, InvalidRequestError

pytestmark = pytest.mark.toolchain


def _reference_tensors(source, prepared):
    """HF tensors with each quantized weight replaced by its dequantized value, so only kernels differ."""
    scheme, out = prepared.scheme, {}
    for name, w in source.tensors.items():
        layout = scheme.layout(role_of(name, w.shape)) if w.ndim == 2 else None
        out[name] = layout.dequantize(layout.quantize(w, scheme.model_dtype)) if layout else w
    return out


@pytest.fixture(scope="module", params=["q0f32", "q4f32_1"])
def engine_and_ref(request):
    source = tiny_llama_model(seed=1, tied=request.param == "q4f32_1").source()
    prepared = prepare_model(source, request.param)
    return Engine(prepared), source, _reference_tensors(source, prepared)


def test_prefill_logits_match_numpy_reference(engine_and_ref):
    engine, source, ref_tensors = engine_and_ref
    ids = [5, 17, 42, 99, 3, 60, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]  # > one prefill chunk
    ours = engine.score(ids)[0]
    ref = llama_logits(ref_tensors, source.config, ids)[-1]
    np.testing.assert_allclose(ours, ref, atol=1e-4 * np.abs(ref).max())


def test_greedy_tokens_equal_reference(engine_and_ref):
    engine, source, ref_tensors = engine_and_ref
    prompt = [5, 17, 42, 99]
    ref_ids = list(prompt)
    for _ in range(8):
        ref_ids.append(int(np.argmax(llama_logits(ref_tensors, source.config, ref_ids)[-1])))
    ours = [int(np.argmax(logits)) for logits in engine.score(prompt, ref_ids[len(prompt) : -1])]
    assert ours == ref_ids[len(prompt) :]


def test_chat_completion_shape_and_usage(engine_and_ref):
    engine, _, _ = engine_and_ref
    out = engine.chat.completions.create(messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert out["object"] == "chat.completion"
    assert out["choices"][0]["finish_reason"] in ("stop", "length")
    assert out["usage"]["completion_tokens"] <= 4
    assert out["usage"]["total_tokens"] == out["usage"]["prompt_tokens"] + out["usage"]["completion_tokens"]


def test_streaming_chunks_concatenate_to_the_non_streaming_text(engine_and_ref):
    engine, _, _ = engine_and_ref
    body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 6, "temperature": 0}
    full = engine.chat.completions.create(**body)["choices"][0]["message"]["content"]
    chunks = list(engine.chat.completions.create(**body, stream=True, stream_options={"include_usage": True}))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == full
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] >= 1


def test_same_seed_same_sampled_output(engine_and_ref):
    engine, _, _ = engine_and_ref
    body = {"prompt": "abc", "max_tokens": 8, "temperature": 1.5, "seed": 7}
    a = engine.completions.create(**body)["choices"][0]["text"]
    b = engine.completions.create(**body)["choices"][0]["text"]
    assert a == b


def test_requests_past_the_context_window_or_vocabulary_are_refused(engine_and_ref):
    """The engine applies the model checks of the request contract itself, so the Python API refuses what REST
    does: max_tokens is never shortened to fit the window."""
    engine, _, _ = engine_and_ref
    window, vocab = engine.model.cfg.context_window_size, engine.model.cfg.vocab_size
    with pytest.raises(ContextLengthExceededError) as caught:
        engine.completions.create(prompt="x" * 200)
    assert caught.value.param == "prompt"
    prompt = [5] * (window - 4)
    assert engine.completions.create(prompt=prompt, max_tokens=4)["choices"]
    with pytest.raises(ContextLengthExceededError) as caught:
        engine.completions.create(prompt=prompt, max_tokens=5)
    assert caught.value.param == "max_tokens"
    with pytest.raises(InvalidRequestError) as caught:
        engine.chat.completions.create(messages=[{"role": "user", "content": "hi"}], logit_bias={str(vocab): 1})
    assert caught.value.param == "logit_bias"


def test_bad_request_fields_are_refused(engine_and_ref):
    engine, _, _ = engine_and_ref
    with pytest.raises(InvalidRequestError, match="temperature"):
        engine.chat.completions.create(messages=[{"role": "user", "content": "x"}], temperature=5)
    with pytest.raises(InvalidRequestError, match="role"):
        engine.chat.completions.create(messages=[{"role": "wizard", "content": "x"}])


def test_concurrent_greedy_requests_equal_sequential_ones(engine_and_ref):
    from concurrent.futures import ThreadPoolExecutor

    engine, _, _ = engine_and_ref
    prompts = [f"{word} " * (i + 1) for i, word in enumerate(["ab", "cd", "ef", "gh", "ij", "kl", "mn", "op"])]

    def run(prompt: str) -> str:
        return engine.completions.create(prompt=prompt, max_tokens=12, temperature=0)["choices"][0]["text"]

    sequential = [run(p) for p in prompts]
    with ThreadPoolExecutor(len(prompts)) as pool:
        concurrent = list(pool.map(run, prompts))
    assert concurrent == sequential


def test_requests_without_max_tokens_share_the_cache_and_preempted_ones_resume(engine_and_ref):
    """`local` mode: 4 sequences on one context window of KV pages. Chat requests that omit max_tokens (the rest
    of the window) run together; when they outgrow the cache the latest is preempted, and recomputing its
    prompt and tokens brings it to the same greedy text as alone."""
    from concurrent.futures import ThreadPoolExecutor

    engine, _, _ = engine_and_ref
    no_stop = {str(t): -100 for t in engine.stop_token_ids}  # every request runs to the end of the window

    def run(word: str) -> str:
        messages = [{"role": "user", "content": word}]
        out = engine.chat.completions.create(messages=messages, temperature=0, logit_bias=no_stop)
        assert out["choices"][0]["finish_reason"] == "length"
        return out["choices"][0]["message"]["content"]

    words = ["ab", "cd", "ef"]
    sequential = [run(w) for w in words]
    before = engine.scheduler.preemptions
    with ThreadPoolExecutor(len(words)) as pool:
        concurrent = list(pool.map(run, words))
    assert engine.scheduler.preemptions > before
    assert concurrent == sequential
    assert engine.metrics()["kv_cache_used_tokens"] == 0


def test_tokenizing_a_long_prompt_lets_other_threads_run(engine_and_ref):
    """A body at the server's size limit is tokenized in a worker thread; if the tokenizer kept the GIL the whole
    time, the server's event loop (/health, running streams) would stall for as long (150 ms and more): the main
    thread here would spend most of the time in long pauses."""
    import threading
    import time

    engine, _, _ = engine_and_ref
    text = "the quick brown fox jumps over the lazy dog " * 4000  # 176 KB: ~0.25 s per tokenization
    done, gaps = threading.Event(), []

    def work():
        engine.encode_prompt(text)
        engine.encode_messages([{"role": "user", "content": text}])
        done.set()

    started = last = time.perf_counter()
    threading.Thread(target=work).start()
    while not done.is_set():
        time.sleep(0.002)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    stalled = sum(g for g in gaps if g > 0.05)
    assert stalled < 0.5 * (last - started), f"{stalled:.2f} s of {last - started:.2f} s in pauses over 50 ms"


def test_closing_a_stream_aborts_it_and_frees_its_kv_pages(engine_and_ref):
    import time

    engine, _, _ = engine_and_ref
    stream = engine.completions.create(prompt="abc", max_tokens=100, temperature=0, stream=True)
    next(stream)
    stream.close()
    deadline = time.monotonic() + 10
    while engine.metrics()["running"] and time.monotonic() < deadline:
        time.sleep(0.01)
    metrics = engine.metrics()
    assert (metrics["running"], metrics["waiting"], metrics["kv_cache_used_tokens"]) == (0, 0, 0)


def test_score_positions_gives_every_positions_logits_in_one_pass(engine_and_ref):
    """Teacher forcing through batch_verify, chunked by prefill_chunk_size, equals prefill + decode step by step."""
    engine, _, _ = engine_and_ref
    ids = [5, 17, 42, 99, 3, 60, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23]  # > one chunk
    every = engine.score_positions(ids)
    assert every.shape == (len(ids), engine.model.cfg.vocab_size)
    stepwise = np.stack(engine.score(ids[:4], ids[4:]))
    np.testing.assert_allclose(every[3:], stepwise, atol=1e-4 * np.abs(stepwise).max())
    assert engine.metrics()["kv_cache_used_tokens"] == 0  # its sequence is freed
    with pytest.raises(ContextLengthExceededError):
        engine.score_positions([1] * (engine.model.cfg.context_window_size + 1))


def test_prompts_the_model_cannot_take_are_refused(engine_and_ref):
    engine, _, _ = engine_and_ref
    with pytest.raises(InvalidRequestError, match="empty"):
        engine.completions.create(prompt="")
    with pytest.raises(InvalidRequestError, match="outside the vocabulary"):
        engine.completions.create(prompt=[1, 2, 10**6])
    with pytest.raises(InvalidRequestError, match="outside the vocabulary"):
        engine.score([-1])


def test_logit_bias_steers_generation(engine_and_ref):
    engine, _, _ = engine_and_ref
    target = engine.tokenizer.token_to_id("a") if engine.tokenizer.token_to_id("a") is not None else 40
    out = engine.completions.create(prompt=[5, 6], max_tokens=3, temperature=0, logit_bias={str(target): 100})
    assert out["choices"][0]["text"] == engine.decode([target] * 3)


def test_frequency_penalty_changes_a_repetitive_greedy_output(engine_and_ref):
    engine, _, _ = engine_and_ref
    plain = engine.completions.create(prompt=[5, 6], max_tokens=12, temperature=0)["choices"][0]["text"]
    penalized = engine.completions.create(prompt=[5, 6], max_tokens=12, temperature=0, frequency_penalty=2)
    assert penalized["choices"][0]["text"] != plain


def test_a_forked_sequence_decodes_like_a_fresh_one_and_shares_the_prompt(engine_and_ref):
    """ModelRunner.fork_sequence, which the n choices of a request use: the child attends to the parent's prompt
    (shared pages plus a copy of the partly filled last one) exactly as a sequence that prefilled it."""
    engine, _, _ = engine_and_ref
    prompt = list(range(5, 25))  # 20 tokens: one full KV page and part of the next

    def run(runner):
        parent, child, grandchild, fresh = -10, -11, -12, -13  # ids the scheduler never hands out
        runner.add_sequence(parent)
        runner.prefill(parent, prompt)
        runner.decode(parent, 7)  # the parent has moved on; the children fork at the end of the prompt
        runner.fork_sequence(parent, child, len(prompt))
        runner.fork_sequence(child, grandchild, len(prompt))
        used = runner.pages.live_tokens
        runner.add_sequence(fresh)
        runner.prefill(fresh, prompt)
        rows = [runner.decode_batch([(child, t), (grandchild, t), (fresh, t)]) for t in (9, 30, 31)]
        for seq in (parent, child, grandchild, fresh):
            runner.remove_sequence(seq)
        return used, rows, runner.pages.live_tokens

    used, rows, left = engine.scheduler.call(run, pages=8)
    # The full page once; the parent's partly filled page (4 prompt tokens and its own), a copy of its 4 tokens
    # in each child.
    assert used == PAGE_SIZE + (len(prompt) - PAGE_SIZE + 1) + 2 * (len(prompt) - PAGE_SIZE)
    for child, grandchild, fresh in rows:
        np.testing.assert_allclose(child, fresh, atol=1e-5 * np.abs(fresh).max())
        np.testing.assert_allclose(grandchild, fresh, atol=1e-5 * np.abs(fresh).max())
    assert left == 0


# ---- logprobs and n --------------------------------------------------------------------------------------


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    wide = logits.astype(np.float64)
    return wide - np.log(np.exp(wide - wide.max()).sum()) - wide.max()


def _ascii_only(engine: Engine) -> dict[str, float]:
    """A logit_bias that keeps the random model off stray UTF-8 bytes, which make no text and so get no
    logprobs entries."""
    return {str(t): -100 for t in range(engine.model.cfg.vocab_size) if not engine.decode([t]).isascii()}


def test_logprobs_match_the_reference_and_rank_the_greedy_token_first(engine_and_ref):
    engine, source, ref_tensors = engine_and_ref
    prompt = [5, 17, 42, 99]
    logit_bias = _ascii_only(engine)
    bias = np.zeros(engine.model.cfg.vocab_size)  # logprobs are taken after the bias: the reference gets it too
    bias[[int(t) for t in logit_bias]] = -100
    out = engine.completions.create(prompt=prompt, max_tokens=6, temperature=0, logprobs=5, logit_bias=logit_bias)
    logprobs = out["choices"][0]["logprobs"]
    assert len(logprobs["tokens"]) == len(logprobs["token_logprobs"]) == len(logprobs["top_logprobs"]) >= 1
    ref = _log_softmax(llama_logits(ref_tensors, source.config, prompt)[-1] + bias)
    first = int(np.argmax(ref))
    assert logprobs["tokens"][0] == engine.decode([first])
    assert np.isclose(logprobs["token_logprobs"][0], ref[first], atol=2e-3)
    expected_top: dict[str, float] = {}
    for t in np.argsort(-ref)[:5]:
        expected_top.setdefault(engine.decode([int(t)]), ref[t])  # tokens of one text: the likelier one
    assert logprobs["top_logprobs"][0].keys() == expected_top.keys()
    for text, value in logprobs["top_logprobs"][0].items():
        assert np.isclose(value, expected_top[text], atol=2e-3)
    for chosen, top in zip(logprobs["token_logprobs"], logprobs["top_logprobs"], strict=True):
        assert chosen == max(top.values())  # greedy: the chosen token is the likeliest
        assert list(top.values()) == sorted(top.values(), reverse=True)
    text, offsets = out["choices"][0]["text"], logprobs["text_offset"]
    assert "".join(logprobs["tokens"]) == text  # ASCII: every token's text is its own
    assert offsets == [len("".join(logprobs["tokens"][:i])) for i in range(len(offsets))]


def _assert_same_logprobs(got: list[dict], want: list[dict]) -> None:
    """The same tokens with the same log-probabilities but for float rounding: a request that reuses another's
    prompt KV computes its last prompt position alone rather than in a chunk."""
    assert [e["token"] for e in got] == [e["token"] for e in want]
    assert [e["logprob"] for e in got] == pytest.approx([e["logprob"] for e in want], abs=1e-4)
    for a, b in zip(got, want, strict=True):
        if "top_logprobs" in b:
            _assert_same_logprobs(a["top_logprobs"], b["top_logprobs"])


def test_logprobs_do_not_depend_on_temperature_but_follow_logit_bias(engine_and_ref):
    engine, _, _ = engine_and_ref
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "logprobs": True, "top_logprobs": 4}
    body["logit_bias"] = _ascii_only(engine)
    greedy = engine.chat.completions.create(**body, temperature=0)["choices"][0]["logprobs"]["content"][0]
    hot = engine.chat.completions.create(**body, temperature=2, top_p=0.5, seed=3)["choices"][0]["logprobs"]
    _assert_same_logprobs(hot["content"][0]["top_logprobs"], greedy["top_logprobs"])
    assert greedy["top_logprobs"][0]["token"] == greedy["token"]
    assert greedy["bytes"] == list(greedy["token"].encode())
    target = engine.tokenizer.token_to_id("a")
    body["logit_bias"] = body["logit_bias"] | {str(target): 100}
    entry = engine.chat.completions.create(**body, temperature=0)["choices"][0]["logprobs"]["content"][0]
    assert entry["token"] == "a" and entry["logprob"] > -1e-3


def test_streamed_logprobs_equal_the_non_streamed_ones(engine_and_ref):
    engine, _, _ = engine_and_ref
    body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 10, "temperature": 0}
    body["logit_bias"] = _ascii_only(engine)
    full = engine.chat.completions.create(**body, logprobs=True, top_logprobs=3)["choices"][0]
    chunks = list(engine.chat.completions.create(**body, logprobs=True, top_logprobs=3, stream=True))
    pieces = [c["choices"][0] for c in chunks if c["choices"]]
    streamed = [e for p in pieces if p["logprobs"] for e in p["logprobs"]["content"]]
    assert streamed
    _assert_same_logprobs(streamed, full["logprobs"]["content"])
    # An entry per generated token (completion_tokens does not count the end-of-sequence token either).
    plain = engine.chat.completions.create(**body)
    assert len(streamed) == plain["usage"]["completion_tokens"]
    assert plain["choices"][0]["logprobs"] is None  # only when asked for
    for piece in pieces:  # an entry travels with the text of its token
        entries = piece["logprobs"]["content"] if piece["logprobs"] else []
        assert "".join(e["token"] for e in entries) == piece["delta"].get("content", "")
    bias = _ascii_only(engine)
    body = {"prompt": [5, 6], "max_tokens": 8, "temperature": 0, "logprobs": 2, "logit_bias": bias}
    text = engine.completions.create(**body)["choices"][0]
    assert text["logprobs"]["tokens"]
    parts = list(engine.completions.create(**body, stream=True))
    columns = [c["choices"][0]["logprobs"] for c in parts if c["choices"] and c["choices"][0]["logprobs"]]
    for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
        assert [v for col in columns for v in col[key]] == text["logprobs"][key]


def test_n_choices_are_seeded_independent_samples_and_usage_sums_them(engine_and_ref):
    engine, _, _ = engine_and_ref
    no_stop = {str(t): -100 for t in engine.stop_token_ids}  # every choice runs to max_tokens
    body = {"prompt": [5, 17, 42], "max_tokens": 8, "temperature": 1.5, "seed": 11, "n": 3, "logit_bias": no_stop}
    first, again = engine.completions.create(**body), engine.completions.create(**body)
    texts = [c["text"] for c in first["choices"]]
    assert [c["index"] for c in first["choices"]] == [0, 1, 2]
    assert texts == [c["text"] for c in again["choices"]]
    assert len(set(texts)) > 1
    assert engine.completions.create(**body | {"n": 1})["choices"][0]["text"] == texts[0]  # n = 1's stream
    assert {c["finish_reason"] for c in first["choices"]} == {"length"}
    assert (first["usage"]["prompt_tokens"], first["usage"]["completion_tokens"]) == (3, 3 * 8)


def test_greedy_choices_are_identical_and_the_prompt_is_prefilled_once(engine_and_ref, prefill_counter):
    engine, _, _ = engine_and_ref
    prefilled = prefill_counter(engine)
    body = {"messages": [{"role": "user", "content": "hi there"}], "max_tokens": 6, "temperature": 0}
    one = engine.chat.completions.create(**body)
    prompt_tokens = one["usage"]["prompt_tokens"]
    prefilled.clear()
    two = engine.chat.completions.create(**body, n=2)
    cached = two["usage"]["prompt_tokens_details"]["cached_tokens"]  # the first request's KV, kept
    assert cached == prompt_tokens - 1
    assert sum(prefilled) == prompt_tokens - cached  # once: the second choice forked the first one's KV cache
    assert [c["message"]["content"] for c in two["choices"]] == [one["choices"][0]["message"]["content"]] * 2
    assert two["usage"]["completion_tokens"] == 2 * one["usage"]["completion_tokens"]
    # More choices than sequence slots (4 here): the later ones wait, then fork a sibling or prefill again.
    six = engine.chat.completions.create(**body, n=6, logprobs=True)
    assert [c["message"]["content"] for c in six["choices"]] == [one["choices"][0]["message"]["content"]] * 6
    values = [[e["logprob"] for e in c["logprobs"]["content"]] for c in six["choices"]]
    np.testing.assert_allclose(values, [values[0]] * 6, atol=1e-4)
    metrics = engine.metrics()
    assert (metrics["running"], metrics["waiting"], metrics["kv_cache_used_tokens"]) == (0, 0, 0)


def test_streamed_choices_interleave_each_with_its_index_and_finish_then_usage(engine_and_ref):
    engine, _, _ = engine_and_ref
    body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 5, "temperature": 1.0, "seed": 4}
    full = engine.chat.completions.create(**body, n=3)
    chunks = list(engine.chat.completions.create(**body, n=3, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == full["usage"]["completion_tokens"]
    by_index: dict[int, list[dict]] = {0: [], 1: [], 2: []}
    for chunk in chunks[:-1]:
        (choice,) = chunk["choices"]
        by_index[choice["index"]].append(choice)
    for index, choices in by_index.items():
        assert choices[0]["delta"] == {"role": "assistant"}
        assert [c["finish_reason"] for c in choices[:-1]] == [None] * (len(choices) - 1)
        assert choices[-1]["finish_reason"] == full["choices"][index]["finish_reason"]
        assert "".join(c["delta"].get("content", "") for c in choices) == full["choices"][index]["message"]["content"]


def test_echo_starts_every_choice_with_the_prompt(engine_and_ref):
    engine, _, _ = engine_and_ref
    out = engine.completions.create(prompt="the cat", max_tokens=3, temperature=0, echo=True, n=2)
    plain = engine.completions.create(prompt="the cat", max_tokens=3, temperature=0)["choices"][0]["text"]
    assert [c["text"] for c in out["choices"]] == ["the cat" + plain] * 2
    chunks = list(engine.completions.create(prompt=[5, 6], max_tokens=3, temperature=0, echo=True, stream=True))
    assert chunks[0]["choices"][0]["text"] == engine.decode([5, 6])


# ---- the prefix cache --------------------------------------------------------------------------------------


def test_the_page_table_agrees_with_tvms_free_pages(engine_and_ref):
    """kv_pages.PageTable mirrors TVM's page bookkeeping: forks at page boundaries and inside pages, sequences
    going on after a fork, removals in any order."""
    engine, _, _ = engine_and_ref

    def run(runner):
        total = runner.available_pages()  # every cached prefix evicted: nothing is held
        seen = []

        def check():
            seen.append((runner.available_pages(), total - runner.pages.pages_in_use))

        a, b, c, d = -20, -21, -22, -23
        runner.add_sequence(a)
        runner.prefill(a, list(range(5, 5 + 2 * PAGE_SIZE + 3)))
        check()
        runner.fork_sequence(a, b, PAGE_SIZE + 5)  # inside a page: copied
        runner.fork_sequence(a, c, 2 * PAGE_SIZE)  # at a boundary
        runner.fork_sequence(b, d, PAGE_SIZE + 5)
        check()
        runner.decode_batch([(a, 7), (b, 8), (c, 9), (d, 10)])
        runner.prefill(c, list(range(40, 40 + PAGE_SIZE)))
        check()
        for seq in (a, d, c, b):
            runner.remove_sequence(seq)
            check()
        return seen, total

    seen, total = engine.scheduler.call(run, pages=10**6)
    assert all(tvm == ours for tvm, ours in seen), seen
    assert seen[-1] == (total, total)


@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 1.0, "seed": 5}])
def test_a_chat_prefills_only_each_new_turn_and_answers_as_without_the_prefix_cache(
    engine_and_ref, prefill_counter, sampling
):
    engine, _, _ = engine_and_ref
    plain = Engine(engine.model, config=EngineConfig(prefix_cache=False))
    counted = prefill_counter(engine)
    messages: list[dict[str, str]] = []
    last_prompt = 0
    for question in ["Hi.", "More.", "Why?"]:
        messages.append({"role": "user", "content": question})
        body = {"messages": messages, "max_tokens": 8, **sampling}
        counted.clear()
        out = engine.chat.completions.create(**body)
        reply = out["choices"][0]["message"]["content"]
        assert reply == plain.chat.completions.create(**body)["choices"][0]["message"]["content"]
        usage = out["usage"]
        cached = usage["prompt_tokens_details"]["cached_tokens"]
        assert sum(counted) == usage["prompt_tokens"] - cached  # prefilled: only what the cache did not hold
        # A later turn reuses most of the previous prompt (its end may tokenize with the reply differently).
        assert cached > last_prompt // 2 or not last_prompt
        last_prompt = usage["prompt_tokens"]
        messages.append({"role": "assistant", "content": reply})
    assert plain.metrics()["prefix_cache_reused_tokens"] == 0


def test_a_prompt_diverging_from_a_cached_one_reuses_the_common_part(engine_and_ref):
    engine, _, _ = engine_and_ref
    plain = Engine(engine.model, config=EngineConfig(prefix_cache=False))
    shared = list(range(30, 30 + PAGE_SIZE + 7))
    body = {"max_tokens": 6, "temperature": 0}
    engine.completions.create(prompt=[*shared, 3, 3, 3], **body)
    out = engine.completions.create(prompt=[*shared, 9, 8], **body)
    assert out["usage"]["prompt_tokens_details"]["cached_tokens"] == len(shared)
    assert out["choices"][0]["text"] == plain.completions.create(prompt=[*shared, 9, 8], **body)["choices"][0]["text"]


def test_a_reply_ends_at_the_gguf_end_of_turn_token(tmp_path):
    """A Gemma instruct GGUF names <end_of_turn> in tokenizer.ggml.eot_token_id: the engine ends the reply there
    ("stop", the token not counted), where it would otherwise run on to max_tokens."""
    end_of_turn = vocabulary(GEMMA)[0].index("<end_of_turn>")

    def tokenizer(writer: gguf.GGUFWriter) -> None:
        add_tokenizer(writer, GEMMA, CHAT_TEMPLATE)
        writer.add_eot_token_id(end_of_turn)

    path = write_gguf(tmp_path / "gemma.gguf", tiny_model(GEMMA), tokenizer=tokenizer)
    engine = Engine(prepare_model(load_source(str(path)), "q0f32", 128, 16))
    messages = [{"role": "user", "content": "Hi there"}]
    out = engine.chat.completions.create(
        messages=messages, max_tokens=4, temperature=0, logit_bias={str(end_of_turn): 100}
    )
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"]["completion_tokens"] == 0
