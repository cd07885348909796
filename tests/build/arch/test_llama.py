"""Llama beyond what test_families.py checks for every family: the weight map covers every parameter, Llama 3
(``llama3`` RoPE) scales the low frequencies only, and what the definition does not implement is refused."""

from __future__ import annotations

import pytest
from family_checks import (
    CHUNK,
    CONTEXT,
)
from hf_tiny import make_hf_model, write_gguf, write_hf_dir
from tiny_llama import tiny_llama_model

from webbuild.build.arch import get_architecture
from webbuild.build.prepare import parameter_specs, prepare_model
from webbuild.build.quantize import QUANTIZATIONS, param_layout
from webbuild.build.source import load_source
from webbuild.build.weights.gguf import load_gguf
from webbuild.errors import InputError, UnsupportedError


def test_llama3_scaling_changes_the_low_frequencies_only():
    """The live bug this family had: llama3 scaling was ignored. Long wavelengths are divided by the factor."""
    hf = make_hf_model("llama").config.to_dict()
    llama = get_architecture("llama")
    scaled = llama.config_from_hf(hf, CONTEXT, CHUNK).rope.inv_freq
    default = {"rope_type": "default", "rope_theta": 500000.0}
    plain = llama.config_from_hf(hf | {"rope_parameters": default}, CONTEXT, CHUNK).rope.inv_freq
    assert scaled[0] == plain[0]
    assert scaled[-1] == pytest.approx(plain[-1] / 8)


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("quant", sorted(QUANTIZATIONS))
def test_weight_map_covers_every_parameter(tied, quant):
    model = tiny_llama_model(tied=tied)
    arch = get_architecture("llama")
    cfg = arch.config_from_hf(model.config, 128, 16)
    scheme = QUANTIZATIONS[quant]
    stored = {}
    for name, arr in arch.weights(model.tensors, cfg, "tiny").items():
        for out_name, shape, dtype in param_layout(name, arr.shape, str(arr.dtype), scheme):
            stored[out_name] = (tuple(shape), dtype)
    assert stored == parameter_specs(cfg, scheme)


def test_smollm2_shaped_config_reads_gqa_and_tied_embeddings():
    cfg = get_architecture("llama").config_from_hf(
        {
            "hidden_size": 576,
            "intermediate_size": 1536,
            "num_hidden_layers": 30,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "vocab_size": 49152,
            "rope_theta": 100000,
            "tie_word_embeddings": True,
            "max_position_embeddings": 8192,
        },
        2048,
        512,
    )
    assert (cfg.head_dim, cfg.num_key_value_heads, cfg.tie_word_embeddings) == (64, 3, True)
    assert cfg.rope.inv_freq[1] == pytest.approx(1e5 ** (-2 / 64))


def test_unknown_architecture_names_the_supported_ones():
    with pytest.raises(UnsupportedError, match="supported: gemma3_text, llama, phi3, qwen2, qwen3"):
        get_architecture("mamba")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "RoPE scaling 'yarn' is not supported; supported: "),
        ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "RoPE scaling 'dynamic' is not supported"),
        ({"attention_bias": True}, "attention_bias = True is not supported"),
        ({"mlp_bias": True}, "mlp_bias = True is not supported"),
        ({"num_local_experts": 8}, "num_local_experts = 8 is not supported"),
        ({"final_logit_softcapping": 30.0}, "final_logit_softcapping = 30.0 is not supported"),
        ({"hidden_act": "relu"}, "hidden_act = 'relu' is not supported: unknown activation; supported: silu"),
        ({"partial_rotary_factor": 0.5}, "partial rotary embeddings"),
    ],
)
def test_config_fields_that_are_not_implemented_are_refused_by_name(change, message):
    config = tiny_llama_model().config | change
    with pytest.raises(UnsupportedError, match=message):
        get_architecture("llama").config_from_hf(config, 128, 16)


def test_a_qwen_checkpoint_relabelled_llama_is_refused_naming_its_biases(tmp_path):
    """Before, the 'llama' path dropped the Q/K/V biases silently and the model answered gibberish."""
    hf_dir = write_hf_dir(tmp_path / "qwen", "qwen2")
    config = (hf_dir / "config.json").read_text().replace('"qwen2"', '"llama"')
    (hf_dir / "config.json").write_text(config)
    with pytest.raises(UnsupportedError, match=r"does not use the tensors model\.layers\.0\.self_attn\.k_proj\.bias"):
        prepare_model(load_source(str(hf_dir)), "q0f32", CONTEXT, CHUNK)


def test_a_missing_tensor_is_named(tiny_llama):
    source = tiny_llama.source()
    del source.tensors["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(InputError, match=r"tensor model\.layers\.1\.mlp\.up_proj\.weight is missing"):
        prepare_model(source, "q0f32")


def test_a_llama3_gguf_with_rope_frequency_factors_is_refused(tmp_path):
    """llama.cpp keeps Llama 3's scaling as a rope_freqs tensor, which is not read yet: refused, not ignored."""
    path = write_gguf(tmp_path / "l3.gguf", write_hf_dir(tmp_path / "hf", "llama"), "llama")
    with pytest.raises(UnsupportedError, match="rope_freqs.weight"):
        load_gguf(path)
