"""What every family must do, on its tiny random model made with transformers' own class (tests/hf_tiny.py): our
CPU engine's logits and greedy tokens equal transformers', the model written as GGUF (as llama.cpp's converter
writes it, RoPE scaling as factor tensors) loads to the same config and weights, tokenizer + chat template ids
equal transformers', and the browser build agrees with the CPU engine, past a sliding window too. A family's own
module (test_<family>.py) holds what only it has."""

from __future__ import annotations

import pytest
from family_checks import (
    check_browser_agrees_with_cpu,
    check_browser_attends_past_the_window,
    check_gguf_loads_to_the_same_weights,
    check_greedy_tokens_match_transformers,
    check_logits_match_transformers,
    check_token_ids_match_transformers,
)

FAMILIES = ("llama", "qwen2", "qwen3", "phi3", "gemma3")


@pytest.mark.toolchain
@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_transformers_at_every_position(tiny_family_of, family):
    check_logits_match_transformers(tiny_family_of(family))


@pytest.mark.toolchain
@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_tokens_match_transformers(tiny_family_of, family):
    check_greedy_tokens_match_transformers(tiny_family_of(family))


@pytest.mark.toolchain
@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizer_and_chat_template_ids_match_transformers(tiny_family_of, family):
    """Byte-level BPE (llama, qwen2, qwen3) and SentencePiece-style (phi3, gemma3) tokenizers."""
    check_token_ids_match_transformers(tiny_family_of(family))


# Each SwiftShader run costs 30-90 s. Llama is covered by the browser tests of tests/build/test_site.py and
# tests/commands/test_verify.py; the others carry what those do not reach: Qwen2 the QKV biases, Qwen3 the Q/K
# norm, Phi-3 the fused qkv/gate_up tensors and longrope (short factors: the context stays within the original
# one), Gemma 3 the sandwich norms, local/global RoPE and head size 256.
@pytest.mark.toolchain
@pytest.mark.parametrize("family", ["qwen2", "qwen3", "phi3", "gemma3"])
def test_browser_build_agrees_with_the_cpu_engine(tiny_family_of, family, tmp_path):
    check_browser_agrees_with_cpu(tiny_family_of(family), tmp_path)


# WebGPU runs TVM's KV cache with its plain aux-data manager, whose per-depth page tables webbuild's runtime patch
# (build/runtime_patch.py) splits: Gemma 3 mixes local and global layers, whose tables the unpatched cache
# aliases (the global layers then see only the window); Phi-3 windows every layer.
@pytest.mark.toolchain
@pytest.mark.parametrize("variant", ["gemma3-window16", "phi3-window16"])
def test_browser_build_attends_past_the_sliding_window_as_the_cpu_engine(tmp_path, variant):
    check_browser_attends_past_the_window(tmp_path, variant)


@pytest.mark.parametrize(
    ("family", "overrides"),
    [
        ("llama", {}),  # llama3 scaling: the rope_freqs tensor
        ("qwen2", {}),
        ("qwen3", {}),
        ("phi3", {}),  # longrope: the rope_factors_long/short tensors
        ("phi3", {"rope_scaling": None}),  # Phi-3-mini-4k: no factor tensors
        ("gemma3", {"query_pre_attn_scalar": 256}),
    ],
)
def test_gguf_loads_to_the_same_weights(tmp_path, family, overrides):
    check_gguf_loads_to_the_same_weights(tmp_path, family, **overrides)
