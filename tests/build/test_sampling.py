"""The sampling functions compiled into model libraries (webbuild.build.sampling): on the CPU build against
numpy and the runtime's CPU sampler rules; on WebGPU (SwiftShader), the tokens the browser chooses on the GPU
against the CPU sampler over the same logits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tvm
from tiny_llama import package_tiny_site
from tvm import IRModule, relax

from webbuild.build.compile import compile_module, make_target
from webbuild.build.sampling import add_sampling_functions

pytestmark = pytest.mark.toolchain

VOCAB = 1000
NAMES = {
    "apply_logit_bias_inplace",
    "apply_penalty_inplace",
    "apply_bitmask_inplace",
    "softmax_with_temperature",
    "argsort_probs",
    "sample_with_top_p",
    "argmax_logits",
}


@pytest.fixture(scope="module")
def vm() -> relax.VirtualMachine:
    target = make_target("cpu")
    return relax.VirtualMachine(compile_module(add_sampling_functions(IRModule(), VOCAB, target), target), tvm.cpu())


def t(a: Any) -> tvm.runtime.Tensor:
    """A tensor of ``a``; Python ints and floats as int32 and float32, as the library's signatures want."""
    array = np.asarray(a)
    narrow = {np.dtype("int64"): "int32", np.dtype("float64"): "float32"}
    return tvm.runtime.tensor(array.astype(narrow.get(array.dtype, array.dtype)))


def test_every_function_webllm_looks_up_is_in_the_library(vm: relax.VirtualMachine) -> None:
    for name in NAMES:
        assert vm[name] is not None
    for target in ("webgpu", "cuda"):  # and each compiles for the GPU targets
        compile_module(add_sampling_functions(IRModule(), VOCAB, make_target(target)), make_target(target))


def test_argmax_is_the_cpu_samplers_lowest_id_of_the_maximum_never_nan(vm: relax.VirtualMachine) -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, VOCAB)).astype("float32")
    logits[1, [17, 600, 999]] = 50  # ties: the lowest id
    logits[2] = -np.inf  # nothing above -inf: token 0, as sampler.js's argmax
    logits[2, [3, 5]] = np.nan
    logits[3, 0] = np.nan  # NaN never wins
    logits[3, 999] = 40
    assert vm["argmax_logits"](t(logits)).numpy().tolist() == [int(logits[0].argmax()), 17, 0, 999]


def inverse_cdf(probs: np.ndarray, u: float) -> int:
    """sampler.js's draw at top_p = 1: the first token whose cumulative probability exceeds u * total."""
    cumulative = np.cumsum(probs.astype(np.float64))
    return int(np.argmax(cumulative > u * cumulative[-1]))


def test_sample_with_top_p_over_token_order_is_the_cpu_inverse_cdf(vm: relax.VirtualMachine) -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 1, VOCAB)).astype("float32") * 3
    temperature = np.array([0.7, 1.3], "float32")
    probs = vm["softmax_with_temperature"](t(logits), t(temperature)).numpy()[:, 0]
    scaled = logits[:, 0] / temperature[:, None]
    expected = np.exp(scaled - scaled.max(-1, keepdims=True))
    np.testing.assert_allclose(probs, expected / expected.sum(-1, keepdims=True), rtol=1e-5, atol=1e-9)
    order = np.tile(np.arange(VOCAB, dtype="int32"), (2, 1))
    uniforms = rng.random(40).astype("float32")
    rows = np.arange(40, dtype="int32") % 2
    got = vm["sample_with_top_p"](t(probs), t(order), t(uniforms), t(rows), t(np.ones(2, "float32"))).numpy()
    want = [inverse_cdf(probs[r], float(u)) for u, r in zip(uniforms, rows, strict=True)]
    assert got.tolist() == want
    # The ends: u = 0 picks the first token with a probability, u just below 1 the last one.
    probs[0, :5] = 0
    edges = vm["sample_with_top_p"](
        t(probs[:1]), t(order[:1]), t(np.array([0.0, 0.99999994], "float32")), t([0, 0]), t([1.0])
    ).numpy()
    assert edges.tolist() == [5, int(np.nonzero(probs[0])[0][-1])]


def test_argsort_and_top_p_keep_the_smallest_prefix_reaching_top_p(vm: relax.VirtualMachine) -> None:
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.full(VOCAB, 0.05), size=2).astype("float32")
    probs[1, 10:20] = probs[1, 10]  # ties sort by lower id first
    ordered, order = (x.numpy() for x in vm["argsort_probs"](t(probs)))
    expected = np.stack([np.argsort(-p, kind="stable") for p in probs]).astype("int32")
    assert np.array_equal(order, expected)
    assert np.array_equal(ordered, np.take_along_axis(probs, expected, axis=1))
    top_p = np.array([0.5, 0.9], "float32")
    uniforms = rng.random(20).astype("float32")
    rows = np.arange(20, dtype="int32") % 2
    got = vm["sample_with_top_p"](t(ordered), t(order), t(uniforms), t(rows), t(top_p)).numpy()
    for token, u, r in zip(got, uniforms, rows, strict=True):
        cumulative = np.cumsum(ordered[r].astype(np.float64))
        kept = int(np.argmax(cumulative >= top_p[r] * cumulative[-1]))  # sampler.js: the token reaching top_p
        pick = int(np.argmax(cumulative > u * cumulative[kept]))
        assert token == order[r, pick] and pick <= kept


def test_bias_penalties_and_bitmask_change_exactly_the_named_logits(vm: relax.VirtualMachine) -> None:
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(2, VOCAB)).astype("float32")
    biased = vm["apply_logit_bias_inplace"](t(logits), t([0, 1, 1]), t([3, 3, 900]), t([1.5, -2.0, 4.0])).numpy()
    want = logits.copy()
    want[0, 3] += np.float32(1.5)
    want[1, 3] -= np.float32(2.0)
    want[1, 900] += np.float32(4.0)
    assert np.array_equal(biased, want)
    # presence 0.5, frequency 0.25 for sequence 0 (row 1), repetition 1.25 for sequence 1 (row 0)
    penalties = np.array([[0.5, 0.25, 1.0], [0.0, 0.0, 1.25]], "float32")
    logits[0, 8], logits[0, 9] = 2.0, -2.0
    got = vm["apply_penalty_inplace"](
        t(logits), t([1, 0]), t([0, 0, 1, 1]), t([3, 4, 8, 9]), t([1, 3, 1, 1]), t(penalties)
    ).numpy()
    want = logits.copy()
    want[1, 3] -= np.float32(0.5) + np.float32(0.25) * 1
    want[1, 4] -= np.float32(0.5) + np.float32(0.25) * 3
    want[0, 8], want[0, 9] = 2.0 / np.float32(1.25), -2.0 * np.float32(1.25)
    np.testing.assert_array_equal(got, want)
    bitmask = np.zeros((2, (VOCAB + 31) // 32), "int32")
    bitmask[1, 0] = 0b1010  # tokens 1 and 3 allowed in row 1
    masked = vm["apply_bitmask_inplace"](t(logits), t([1]), t(bitmask)).numpy()
    assert np.array_equal(masked[0], logits[0])
    assert masked[1, 1] == logits[1, 1] and masked[1, 3] == logits[1, 3]
    assert np.all(np.delete(masked[1], [1, 3]) == np.finfo("float32").min)


# ---- the browser: tokens chosen on the GPU (SwiftShader) against the CPU sampler over the same logits --------


@pytest.fixture(scope="module")
def tiny_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return package_tiny_site(tmp_path_factory.mktemp("sampling"), seed=5)


@pytest.fixture(scope="module")
def tab(tiny_site: Path) -> Iterator[Any]:
    from webbuild.browser import launch_chromium
    from webbuild.serve.app import serving

    with serving(tiny_site) as url, launch_chromium() as chromium:
        tab = chromium.open(url)
        tab.wait_for("['ready', 'error'].includes(document.body?.dataset.state)", timeout_s=600)
        assert tab.evaluate("document.body.dataset.state") == "ready", tab.errors()
        yield tab


# The same request twice: as it is, its tokens are chosen on the GPU; asking for logprobs (which leaves the
# tokens alone) makes the runtime read the logits back and choose on the CPU (sampler.js).
_BOTH_JS = """(async (request) => {
  const engine = window.webbuildApp.engine;
  const gpu = await engine.completions.create(request);
  const cpu = await engine.completions.create({ ...request, logprobs: 1 });
  return { gpu: gpu.choices[0].text, cpu: cpu.choices[0].text, tokens: cpu.usage.completion_tokens };
})"""


@pytest.mark.parametrize(
    "request_",
    [
        {"temperature": 0},
        {"temperature": 1.0, "seed": 7},
        {"temperature": 0.8, "seed": 3, "presence_penalty": 0.6, "frequency_penalty": 0.3, "logit_bias": {"40": 2}},
    ],
    ids=["greedy", "sampled", "penalties-and-bias"],
)
def test_tokens_chosen_on_the_gpu_are_the_cpu_samplers(tab: Any, request_: dict[str, Any]) -> None:
    request = {"prompt": "the cat sat on the", "max_tokens": 12} | request_
    out = tab.evaluate(f"{_BOTH_JS}({json.dumps(request)})")
    assert out["tokens"] >= 3, out
    assert out["gpu"] == out["cpu"]
