"""Qwen2 / Qwen2.5 (Q/K/V biases, separate output head here) against transformers, GGUF, refusals."""

from __future__ import annotations

import pytest
from family_checks import (
    CHUNK,
    check_gguf_loads_to_the_same_weights,
    check_greedy_tokens_match_transformers,
    check_logits_match_transformers,
    tiny_family,
)
from hf_tiny import make_hf_model

from webbuild.build.arch import get_architecture
from webbuild.errors import UnsupportedError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_family("qwen2", tmp_path_factory.mktemp("qwen2"))


@pytest.mark.toolchain
def test_logits_match_transformers_at_every_position(tiny):
    check_logits_match_transformers(tiny)


@pytest.mark.toolchain
def test_greedy_tokens_match_transformers(tiny):
    check_greedy_tokens_match_transformers(tiny)


def test_gguf_loads_to_the_same_weights(tmp_path):
    check_gguf_loads_to_the_same_weights(tmp_path, "qwen2")


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
