"""Gemma 3 text ((1 + w) norms, scaled embeddings, sandwich norms, Q/K norms, GELU-tanh, head size 256,
query_pre_attn_scalar, local and global layers with their own RoPE) against transformers, GGUF, refusals, and the
browser build against the CPU engine."""

from __future__ import annotations

import pytest
from family_checks import (
    CHUNK,
    check_browser_agrees_with_cpu,
    check_gguf_loads_to_the_same_weights,
    check_greedy_tokens_match_transformers,
    check_logits_match_transformers,
    check_token_ids_match_transformers,
    tiny_family,
)
from hf_tiny import make_hf_model

from webbuild.build.arch import get_architecture
from webbuild.errors import UnsupportedError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_family("gemma3", tmp_path_factory.mktemp("gemma3"))


@pytest.mark.toolchain
def test_logits_match_transformers_at_every_position(tiny):
    check_logits_match_transformers(tiny)


@pytest.mark.toolchain
def test_greedy_tokens_match_transformers(tiny):
    check_greedy_tokens_match_transformers(tiny)


@pytest.mark.toolchain
def test_sentencepiece_style_tokenizer_and_chat_template_ids_match_transformers(tiny):
    check_token_ids_match_transformers(tiny)


@pytest.mark.toolchain
def test_browser_build_agrees_with_the_cpu_engine(tiny, tmp_path):
    check_browser_agrees_with_cpu(tiny, tmp_path)


def test_gguf_loads_to_the_same_weights(tmp_path):
    # llama.cpp scales attention by head_dim ** -0.5, which is query_pre_attn_scalar ** -0.5 in the released models.
    check_gguf_loads_to_the_same_weights(tmp_path, "gemma3", query_pre_attn_scalar=256)


def test_local_and_global_layers_rotate_with_their_own_bases():
    cfg = get_architecture("gemma3_text").config_from_hf(make_hf_model("gemma3").config.to_dict(), 128, CHUNK)
    assert cfg.sliding_layers == (0, 2)
    assert cfg.rope_of(0).inv_freq[1] == pytest.approx(1e4 ** (-2 / 256))
    assert cfg.rope_of(1).inv_freq[1] == pytest.approx(1e6 ** (-2 / 256) / 8)  # global: linear scaling, factor 8
    assert cfg.context_window_size == 128 and cfg.softmax_scale == 64**-0.5


def test_the_sliding_window_limits_the_context_window():
    config = make_hf_model("gemma3").config.to_dict()
    assert get_architecture("gemma3_text").config_from_hf(config, 32768, CHUNK).context_window_size == 256


@pytest.mark.parametrize("field", ["final_logit_softcapping", "attn_logit_softcapping"])
def test_softcapping_is_refused(field):
    config = make_hf_model("gemma3").config.to_dict() | {field: 30.0}
    with pytest.raises(UnsupportedError, match=f"{field} = 30.0 is not supported"):
        get_architecture("gemma3_text").config_from_hf(config, 128, CHUNK)
