"""Phi-3 / Phi-3.5-mini beyond what test_families.py checks for every family: longrope within the original
context, from a GGUF's factor tensors too, its context refusal, the older scaling names, a sliding window on every
layer."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from family_checks import (
    CHUNK,
    DEVICE_VARIANTS,
    check_greedy_tokens_match_transformers,
    check_logits_match_transformers,
    gguf_family,
    random_ids,
    tiny_family,
)
from hf_tiny import make_hf_model, write_gguf, write_hf_dir

from webbuild.build.arch import get_architecture
from webbuild.build.source import load_source
from webbuild.build.weights.gguf import load_gguf
from webbuild.errors import UnsupportedError
from webbuild.verify.references import HFScorer


@pytest.mark.toolchain
def test_a_longrope_gguf_matches_transformers(tiny_family_of, tmp_path):
    """Its rope_factors_short/long tensors and attention factor build the HF directory's config (so its compiled
    library), which matches transformers within the original context."""
    tiny = tiny_family_of("phi3")
    from_gguf = gguf_family(tiny, tmp_path)
    assert from_gguf.engine.model.cfg == tiny.engine.model.cfg
    check_logits_match_transformers(from_gguf)


def test_a_longrope_gguf_config_builds_the_same_transformers_model(tmp_path):
    """``verify --reference hf`` builds transformers from a source's config: from a GGUF's too, with its RoPE (which
    Phi3Config reads beside the RoPE parameters: original_max_position_embeddings)."""
    hf_dir = write_hf_dir(tmp_path / "hf", "phi3")
    model = load_gguf(write_gguf(tmp_path / "p.gguf", hf_dir, "phi3"))
    hf_source = load_source(str(hf_dir))
    gguf_source = replace(hf_source, config=model.config, tensors=model.tensors)
    ids = random_ids(hf_source.config["vocab_size"], 40)
    np.testing.assert_array_equal(HFScorer(gguf_source).score(ids), HFScorer(hf_source).score(ids))


def test_a_longrope_gguf_past_its_original_context_is_refused_naming_the_limit(tmp_path):
    config = load_gguf(write_gguf(tmp_path / "p.gguf", write_hf_dir(tmp_path / "hf", "phi3"), "phi3")).config
    with pytest.raises(UnsupportedError, match=r"up to original_max_position_embeddings \(128 tokens\)"):
        get_architecture("phi3").config_from_hf(config, 256, CHUNK)


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
