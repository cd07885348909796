"""The KV cache's split kernel rotates Q and K with our RoPE (webbuild.build.arch.split_rope): on the CPU build
against numpy's rotate-half RoPE, and in the export exactly when every layer shares one RoPE (the blocks rotate
otherwise: Gemma 3's local layers). WebGPU's split also appends K and V to the cache's pages when told to, as
TVM's transpose-append kernel would."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import tvm
from family_checks import CHUNK, CONTEXT
from hf_tiny import make_hf_model

from webbuild.build.arch import get_architecture
from webbuild.build.arch.rope import make_rope
from webbuild.build.arch.split_rope import PAGE_SIZE, SPLIT_FUNCTION, split_append_kernel, split_rope_kernel
from webbuild.build.compile import make_target
from webbuild.build.export import export_model
from webbuild.build.quantize.scheme import get_scheme

pytestmark = pytest.mark.toolchain

Q_HEADS, KV_HEADS, HEAD_DIM = 4, 2, 16
LLAMA3 = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}


def numpy_rope(x: np.ndarray, positions: np.ndarray, inv_freq: np.ndarray, factor: float) -> np.ndarray:
    """HF's rotate-half RoPE of ``x [tokens, heads, d]``: dims i and i + d/2 rotate by position * inv_freq[i]."""
    angle = positions[:, None, None].astype(np.float64) * np.concatenate([inv_freq, inv_freq])
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return (x * np.cos(angle) + rotated * np.sin(angle)) * factor


@pytest.mark.parametrize(
    ("params", "dtype", "atol"),
    [
        ({"rope_theta": 10000.0}, "float32", 1e-5),
        (LLAMA3, "float32", 1e-5),
        ({"rope_theta": 1000000.0, "rope_type": "linear", "factor": 8.0}, "float16", 5e-3),
    ],
)
def test_the_split_kernel_splits_and_rotates_as_numpy(params, dtype, atol) -> None:
    rope = make_rope(params, HEAD_DIM, max_position_embeddings=128, context_window_size=128, where="test")
    rope = replace(rope, attention_factor=1.25)  # as longrope scales cos and sin
    lib = tvm.compile(split_rope_kernel(rope, Q_HEADS, KV_HEADS, HEAD_DIM, dtype), target="llvm")
    tokens, dev = 7, tvm.cpu()
    qkv = np.random.default_rng(0).standard_normal((tokens, Q_HEADS + 2 * KV_HEADS, HEAD_DIM)).astype(dtype)
    # The cache's position map, read through a view that starts one entry in (its elem_offset).
    positions = np.array([99, 0, 1, 2, 3, 40, 41, 127], np.int32)
    position_map = tvm.runtime.tensor(positions, dev)._create_view((tokens,), "int32", relative_byte_offset=4)
    q, k, v = (tvm.runtime.tensor(np.zeros((tokens, h, HEAD_DIM), dtype), dev) for h in (Q_HEADS, KV_HEADS, KV_HEADS))
    lib[SPLIT_FUNCTION](tvm.runtime.tensor(qkv, dev), position_map, q, k, v, 0)  # apply_rope 0: RoPE mode NONE

    expected = numpy_rope(qkv[:, : Q_HEADS + KV_HEADS].astype(np.float64), positions[1:], np.array(rope.inv_freq), 1.25)
    np.testing.assert_allclose(q.numpy(), expected[:, :Q_HEADS], rtol=0, atol=atol)
    np.testing.assert_allclose(k.numpy(), expected[:, Q_HEADS:], rtol=0, atol=atol)
    np.testing.assert_array_equal(v.numpy(), qkv[:, Q_HEADS + KV_HEADS :])


@pytest.mark.parametrize("rotates", [True, False], ids=["rope", "no-rope"])
def test_the_appending_split_writes_k_and_v_into_their_pages_when_told(rotates: bool) -> None:
    rope = make_rope({"rope_theta": 10000.0}, HEAD_DIM, max_position_embeddings=128, context_window_size=128, where="t")
    lib = tvm.compile(split_append_kernel(rope if rotates else None, Q_HEADS, KV_HEADS, HEAD_DIM, "float32"), "llvm")
    tokens, pages_n, dev = 3, 4, tvm.cpu()
    qkv = np.random.default_rng(1).standard_normal((tokens, Q_HEADS + 2 * KV_HEADS, HEAD_DIM)).astype("float32")
    positions = np.array([5, 6, 7], np.int32)
    slots = np.array([2 * PAGE_SIZE + 5, -1, 3], np.int32)  # page 2 slot 5; a token not kept; page 0 slot 3
    expected_q = numpy_rope(qkv[:, :Q_HEADS], positions, np.array(rope.inv_freq), 1.0) if rotates else qkv[:, :Q_HEADS]
    k_in = qkv[:, Q_HEADS : Q_HEADS + KV_HEADS]
    expected_k = numpy_rope(k_in, positions, np.array(rope.inv_freq), 1.0) if rotates else k_in
    for append in (1, 0):
        pages = tvm.runtime.tensor(np.zeros((pages_n, 2, KV_HEADS, PAGE_SIZE, HEAD_DIM), "float32"), dev)
        q, k, v = (
            tvm.runtime.tensor(np.zeros((tokens, h, HEAD_DIM), "float32"), dev) for h in (Q_HEADS, KV_HEADS, KV_HEADS)
        )
        args = (tvm.runtime.tensor(positions, dev), q, k, v, 0, pages, tvm.runtime.tensor(slots, dev), append)
        lib[SPLIT_FUNCTION](tvm.runtime.tensor(qkv, dev), *args)
        np.testing.assert_allclose(q.numpy(), expected_q, rtol=0, atol=1e-5)
        np.testing.assert_allclose(k.numpy(), expected_k, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(v.numpy(), qkv[:, Q_HEADS + KV_HEADS :])
        want = np.zeros((pages_n, 2, KV_HEADS, PAGE_SIZE, HEAD_DIM), "float32")
        if append:
            for token, slot in enumerate(slots):
                if slot != -1:
                    want[slot // PAGE_SIZE, 0, :, slot % PAGE_SIZE] = k.numpy()[token]
                    want[slot // PAGE_SIZE, 1, :, slot % PAGE_SIZE] = qkv[token, Q_HEADS + KV_HEADS :]
        np.testing.assert_array_equal(pages.numpy(), want)


def exported(family: str, target: str = "webgpu") -> tvm.IRModule:
    config = make_hf_model(family).config.to_dict()
    cfg = get_architecture(config["model_type"]).config_from_hf(config, CONTEXT, CHUNK)
    return export_model(cfg, get_scheme("q0f32"), make_target(target)).mod


def test_with_one_rope_the_split_kernel_rotates_and_the_blocks_do_not() -> None:
    for target, block in (("webgpu", "split_append"), ("cpu", "split_rope")):
        mod = exported("llama", target)
        assert "rope" not in {gv.name_hint for gv in mod.get_global_vars()}
        split = mod[SPLIT_FUNCTION].script()
        assert f'T.sblock("{block}")' in split and "T.cos(" in split


def test_gemma3s_two_ropes_are_applied_in_the_blocks() -> None:
    mod = exported("gemma3")
    assert "rope" in {gv.name_hint for gv in mod.get_global_vars()}
    split = mod[SPLIT_FUNCTION].script()
    assert 'T.sblock("split_append")' in split and "T.cos(" not in split  # WebGPU's split appends, unrotated
    assert 'T.sblock("split_rope")' not in exported("gemma3", "cpu")[SPLIT_FUNCTION].script()
