"""Qwen2 / Qwen2.5 beyond what test_families.py checks for every family: the sliding window, refusals."""

from __future__ import annotations

import pytest
from family_checks import (
    CHUNK,
)
from hf_tiny import make_hf_model

from webbuild.build.arch import get_architecture
from webbuild.errors import UnsupportedError


def test_a_sliding_window_limits_the_context_window_to_it():
    config = make_hf_model("qwen2").config.to_dict() | {"use_sliding_window": True, "sliding_window": 48}
    assert get_architecture("qwen2").config_from_hf(config, 4096, CHUNK).context_window_size == 48
    assert (
        get_architecture("qwen2").config_from_hf(config | {"use_sliding_window": False}, 96, CHUNK).context_window_size
        == 96
    )


def test_mixture_of_experts_is_refused():
    config = make_hf_model("qwen2").config.to_dict() | {"num_experts": 8}
    with pytest.raises(UnsupportedError, match="num_experts = 8 is not supported"):
        get_architecture("qwen2").config_from_hf(config, 128, CHUNK)
