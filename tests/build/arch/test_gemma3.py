"""Gemma 3 text beyond what test_families.py checks for every family: local and global layers with their own
RoPE, the sliding window of the local layers, refusals. The tiny model's window (16) is shorter than the
sequences test_families.py compares with transformers, so those checks go through the windowed layers."""

from __future__ import annotations

import pytest
from family_checks import (
    CHUNK,
    SEQUENCE,
    check_greedy_tokens_match_transformers,
    check_logits_match_transformers,
    tiny_family,
)
from hf_tiny import make_hf_model

from webbuild.build.arch import get_architecture
from webbuild.errors import UnsupportedError


def test_local_and_global_layers_rotate_with_their_own_bases():
    cfg = get_architecture("gemma3_text").config_from_hf(make_hf_model("gemma3").config.to_dict(), 128, CHUNK)
    assert cfg.sliding_layers == (0, 2)
    assert cfg.rope_of(0).inv_freq[1] == pytest.approx(1e4 ** (-2 / 256))
    assert cfg.rope_of(1).inv_freq[1] == pytest.approx(1e6 ** (-2 / 256) / 8)  # global: linear scaling, factor 8
    assert cfg.context_window_size == 128 and cfg.softmax_scale == 64**-0.5


@pytest.mark.toolchain
def test_local_layers_past_their_window_match_transformers(tmp_path):
    """A window of 16: the 64 compared positions are 4 prefill chunks of 16, most of them past the window; the
    greedy tokens decode from 12 to 28 positions."""
    tiny = tiny_family("gemma3", tmp_path, sliding_window=16)
    assert tiny.engine.model.cfg.sliding_window == 16 and SEQUENCE > 3 * 16
    check_logits_match_transformers(tiny)
    check_greedy_tokens_match_transformers(tiny)


def test_local_layers_attend_within_the_window_and_the_context_is_not_limited_to_it():
    config = make_hf_model("gemma3").config.to_dict()
    cfg = get_architecture("gemma3_text").config_from_hf(config | {"sliding_window": 100}, 1024, 512)
    assert cfg.context_window_size == 1024 and cfg.sliding_window == 100 and cfg.sliding_layers == (0, 2)
    assert cfg.prefill_chunk_size == 100  # TVM attends a chunk to itself without the window


def test_a_window_the_context_fits_in_is_dropped():
    config = make_hf_model("gemma3").config.to_dict()
    cfg = get_architecture("gemma3_text").config_from_hf(config, 256, 512)
    assert cfg.sliding_window == 0 and cfg.sliding_layers == (0, 2)  # the local layers keep their own RoPE


@pytest.mark.parametrize("field", ["final_logit_softcapping", "attn_logit_softcapping"])
def test_softcapping_is_refused(field):
    config = make_hf_model("gemma3").config.to_dict() | {field: 30.0}
    with pytest.raises(UnsupportedError, match=f"{field} = 30.0 is not supported"):
        get_architecture("gemma3_text").config_from_hf(config, 128, CHUNK)
