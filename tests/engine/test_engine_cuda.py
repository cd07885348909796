"""The CUDA build of the same definition: skipped where there is no CUDA GPU (CI), run on the GPU machine."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from llama_reference import llama_logits
from tiny_llama import tiny_llama_model, wide_head_model, write_gguf

from webbuild.build.prepare import prepare_model
from webbuild.build.source import load_source
from webbuild.engine.engine import Engine

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not tvm.cuda(0).exist, reason="no CUDA GPU on this machine"),
]


@pytest.fixture(scope="module")
def cuda_engine():
    source = tiny_llama_model(seed=2).source()
    return Engine(prepare_model(source, "q0f32"), device="cuda"), source


def test_cuda_logits_match_numpy_reference(cuda_engine):
    engine, source = cuda_engine
    ids = [5, 17, 42, 99, 3, 60, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]
    ours = engine.score(ids)[0]
    ref = llama_logits(source.tensors, source.config, ids)[-1]
    np.testing.assert_allclose(ours, ref, atol=1e-3 * np.abs(ref).max())


def test_cuda_concurrent_greedy_equals_sequential(cuda_engine):
    from concurrent.futures import ThreadPoolExecutor

    engine, _ = cuda_engine
    prompts = [f"{w} " * (i + 1) for i, w in enumerate(["ab", "cd", "ef", "gh", "ij", "kl", "mn", "op"])]

    def run(prompt: str) -> str:
        return engine.completions.create(prompt=prompt, max_tokens=12, temperature=0)["choices"][0]["text"]

    sequential = [run(p) for p in prompts]
    with ThreadPoolExecutor(len(prompts)) as pool:
        assert list(pool.map(run, prompts)) == sequential


def test_cuda_choices_fork_the_prompt_and_equal_a_single_request(cuda_engine):
    """n > 1 forks the prompt's KV cache, so decoding attends over several page levels (the cascade attention
    and its merge kernel); greedy choices must equal the single request, logprobs included."""
    engine, _ = cuda_engine
    ascii_only = {str(t): -100 for t in range(engine.model.cfg.vocab_size) if not engine.decode([t]).isascii()}
    body = {"prompt": list(range(5, 25)), "max_tokens": 24, "temperature": 0, "logprobs": 3, "logit_bias": ascii_only}
    single = engine.completions.create(**body)["choices"][0]
    assert single["logprobs"]["tokens"]
    for choice in engine.completions.create(**body, n=3)["choices"]:
        assert choice["text"] == single["text"]
        np.testing.assert_allclose(
            choice["logprobs"]["token_logprobs"], single["logprobs"]["token_logprobs"], atol=1e-4
        )
    assert engine.metrics()["kv_cache_used_tokens"] == 0


def test_cuda_prefill_in_chunks_matches_numpy_reference():
    """Chunks after the first attend over the cached prefix and merge two partial attentions (our merge kernel,
    webbuild/build/arch/attention_merge.py): every position's logits still equal the reference, at head size 64."""
    source = wide_head_model().source()
    engine = Engine(prepare_model(source, "q0f32", context_window_size=256, prefill_chunk_size=16), device="cuda")
    ids = [(7 * i + 3) % 250 for i in range(50)]  # four chunks
    ours = engine.score_positions(ids)
    ref = llama_logits(source.tensors, source.config, ids)
    np.testing.assert_allclose(ours, ref, atol=1e-3 * np.abs(ref).max())


@pytest.mark.parametrize("scheme", ["q4f32_m", "q4f16_m", "q8f32_s", "q4f16_1"])
def test_cuda_runs_each_layout_as_the_cpu_does(scheme, tmp_path):
    """The dequantizing matmuls of every layout on the GPU (dlight's GEMV/Matmul inline them): a GGUF with Q4_1
    linears and a Q8_0 embedding gives the CPU build's logits, up to the order of the sums."""
    import gguf

    tiny = tiny_llama_model(seed=2)
    qtypes = {n: gguf.GGMLQuantizationType.Q4_1 for n in tiny.tensors if n.endswith("proj.weight")}
    qtypes["model.embed_tokens.weight"] = gguf.GGMLQuantizationType.Q8_0
    source = load_source(str(write_gguf(tmp_path / "m.gguf", tiny, qtypes)))
    prepared = prepare_model(source, scheme, context_window_size=128, prefill_chunk_size=16)
    ids = [(7 * i + 3) % 250 for i in range(40)]
    cpu = Engine(prepared).score_positions(ids)
    cuda = Engine(prepared, device="cuda").score_positions(ids)
    tolerance = 3e-2 if "f16" in scheme else 1e-3
    np.testing.assert_allclose(cuda, cpu, atol=tolerance * np.abs(cpu).max())
