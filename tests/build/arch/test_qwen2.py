"""Qwen2 / Qwen2.5 beyond what test_families.py checks for every family: which layers slide, refusals."""

from __future__ import annotations

import pytest
from family_checks import (
    CHUNK,
    DEVICE_VARIANTS,
    check_greedy_tokens_match_transformers,
    check_logits_match_transformers,
    tiny_family,
)
from hf_tiny import make_hf_model

from webbuild.build.arch import get_architecture
from webbuild.errors import UnsupportedError


def test_a_sliding_window_applies_from_max_window_layers_on_when_turned_on():
    config = make_hf_model("qwen2").config.to_dict() | {"sliding_window": 48, "max_window_layers": 1}
    config.pop("layer_types", None)  # an older config: the layers follow from max_window_layers
    on = get_architecture("qwen2").config_from_hf(config | {"use_sliding_window": True}, 1024, CHUNK)
    assert on.context_window_size == 1024 and on.sliding_window == 48 and on.sliding_layers == (1,)
    off = get_architecture("qwen2").config_from_hf(config | {"use_sliding_window": False}, 96, CHUNK)
    assert off.context_window_size == 96 and off.sliding_window == 0


def test_mixture_of_experts_is_refused():
    config = make_hf_model("qwen2").config.to_dict() | {"num_experts": 8}
    with pytest.raises(UnsupportedError, match="num_experts = 8 is not supported"):
        get_architecture("qwen2").config_from_hf(config, 128, CHUNK)


@pytest.mark.toolchain
def test_a_window_past_itself_matches_transformers(tmp_path):
    """use_sliding_window with a window of 16 from layer 1 on: 4 prefill chunks of 16 compared, decoding from 12
    to 28 positions, one full and one sliding layer."""
    family, overrides = DEVICE_VARIANTS["qwen2-window16"]
    tiny = tiny_family(family, tmp_path, **overrides)
    assert tiny.engine.model.cfg.sliding_window == 16 and tiny.engine.model.cfg.sliding_layers == (1,)
    check_logits_match_transformers(tiny)
    check_greedy_tokens_match_transformers(tiny)
