"""The CPU engine runs the compiled definition and must agree with an independent numpy Llama."""

from __future__ import annotations

import numpy as np
import pytest
from llama_reference import llama_logits
from tiny_llama import tiny_llama_model

from webbuild.engine import Engine
from webbuild.errors import ContextLengthExceededError, InvalidRequestError
from webbuild.prepare import prepare_model
from webbuild.quantize import dequantize_q4

pytestmark = pytest.mark.toolchain


def _reference_tensors(source, prepared):
    """HF tensors with each quantized weight replaced by its dequantized value, so only kernels differ."""
    if not prepared.scheme.bits:
        return source.tensors
    from webbuild.quantize import quantize_q4

    out = {}
    for name, w in source.tensors.items():
        out[name] = dequantize_q4(*quantize_q4(w, prepared.scheme.scale_dtype)) if w.ndim == 2 else w
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


def test_prompt_longer_than_context_window_is_refused(engine_and_ref):
    engine, _, _ = engine_and_ref
    with pytest.raises(ContextLengthExceededError):
        engine.completions.create(prompt="x" * 200)


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


def test_closing_a_stream_aborts_it_and_frees_its_kv_pages(engine_and_ref):
    import time

    engine, _, _ = engine_and_ref
    stream = engine.completions.create(prompt="abc", max_tokens=100, temperature=0, stream=True)
    next(stream)
    stream.close()
    deadline = time.monotonic() + 10
    while engine.metrics()["running"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.metrics() | {"kv_cache_capacity_tokens": 0} == {
        "running": 0,
        "waiting": 0,
        "kv_cache_used_tokens": 0,
        "kv_cache_capacity_tokens": 0,
    }


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
