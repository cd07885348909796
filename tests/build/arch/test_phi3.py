"""Phi-3 / Phi-3.5-mini beyond what test_families.py checks for every family: longrope within the original
context, its GGUF and context refusals, the older scaling names, a sliding window on every layer."""

from __future__ import annotations

import pytest
from family_checks import (
    CHUNK,
    DEVICE_VARIANTS,
    check_greedy_tokens_match_transformers,
    check_logits_match_transformers,
    tiny_family,
)
from hf_tiny import make_hf_model, write_gguf, write_hf_dir

from webbuild.build.arch import get_architecture
from webbuild.build.weights.gguf import load_gguf
from webbuild.errors import UnsupportedError


def test_a_longrope_gguf_is_refused_naming_its_factor_tensors(tmp_path):
    path = write_gguf(tmp_path / "p.gguf", write_hf_dir(tmp_path / "hf", "phi3"), "phi3")
    with pytest.raises(UnsupportedError, match="rope_factors_long.weight"):
        load_gguf(path)


def test_longrope_past_the_original_context_is_refused_naming_the_limit():
    config = make_hf_model("phi3").config.to_dict()
    with pytest.raises(UnsupportedError, match=r"up to original_max_position_embeddings \(128 tokens\)") as caught:
        get_architecture("phi3").config_from_hf(config, 256, CHUNK)
    assert caught.value.param == "context_window_size"


def test_the_sliding_window_applies_to_every_layer_without_limiting_the_context():
    config = make_hf_model("phi3").config.to_dict() | {"rope_parameters": None, "rope_theta": 10000.0}
    config |= {"sliding_window": 100, "rope_scaling": None}
    cfg = get_architecture("phi3").config_from_hf(config, 1024, 512)
    assert cfg.context_window_size == 1024 and cfg.sliding_window == 100
    assert cfg.sliding_layers == (0, 1) and cfg.prefill_chunk_size == 100  # a chunk at most one window


def test_partial_rotary_embeddings_are_refused():
    config = make_hf_model("phi3", rope_scaling=None).config.to_dict()
    config["rope_parameters"]["partial_rotary_factor"] = 0.75
    with pytest.raises(UnsupportedError, match="partial_rotary_factor 0.75"):
        get_architecture("phi3").config_from_hf(config, 128, CHUNK)


def test_early_su_scaling_configs_read_as_longrope():
    config = make_hf_model("phi3").config.to_dict()
    su = config | {"rope_parameters": config["rope_parameters"] | {"rope_type": "su"}}
    arch = get_architecture("phi3")
    assert arch.config_from_hf(su, 128, CHUNK) == arch.config_from_hf(config, 128, CHUNK)


@pytest.mark.toolchain
def test_a_window_past_itself_matches_transformers(tmp_path):
    """Every layer sliding (window 16; 4 prefill chunks of 16 compared, decoding from 12 to 28 positions): TVM's
    KV cache then needs one unused full-attention layer (arch/blocks.py), and the logits and greedy tokens still
    equal transformers'."""
    family, overrides = DEVICE_VARIANTS["phi3-window16"]
    tiny = tiny_family(family, tmp_path, **overrides)
    assert tiny.engine.model.cfg.sliding_window == 16 and tiny.engine.model.cfg.sliding_layers == (0, 1)
    check_logits_match_transformers(tiny)
    check_greedy_tokens_match_transformers(tiny)
