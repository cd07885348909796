"""Llama beyond what test_families.py checks for every family: the weight map covers every parameter, Llama 3
(``llama3`` RoPE) scales the low frequencies only, also from a GGUF's rope_freqs tensor, and what the definition
does not implement is refused."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from family_checks import CHUNK, CONTEXT, check_logits_match_transformers, gguf_family
from hf_tiny import make_hf_model, write_gguf, write_hf_dir
from tiny_llama import tiny_llama_model

from webbuild.build.arch import get_architecture
from webbuild.build.prepare import parameter_specs, prepare_model
from webbuild.build.quantize import QUANTIZATIONS, param_layout
from webbuild.build.source import load_source
from webbuild.build.weights.gguf import load_gguf
from webbuild.errors import CorruptFileError, InputError, UnsupportedError


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


def test_a_llama3_gguf_rotates_as_transformers(tmp_path):
    """llama.cpp keeps Llama 3's scaling as per-pair divisors (rope_freqs); the frequencies they give are
    transformers' own within float32 rounding, the blended pair included."""
    import transformers

    hf_dir = write_hf_dir(tmp_path / "hf", "llama")
    path = write_gguf(tmp_path / "l3.gguf", hf_dir, "llama")
    stored = {t.name: t for t in gguf.GGUFReader(path).tensors}["rope_freqs.weight"].data
    assert ((stored > 1) & (stored < 8)).any()  # a pair between the kept and the divided-by-8 ones
    cfg = get_architecture("llama").config_from_hf(load_gguf(path).config, CONTEXT, CHUNK)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).model.rotary_emb
    np.testing.assert_array_max_ulp(np.array(cfg.rope.inv_freq, np.float32), theirs.inv_freq.numpy(), maxulp=2)
    assert cfg.rope.attention_factor == theirs.attention_scaling == 1.0


@pytest.mark.toolchain
def test_a_llama3_gguf_matches_transformers(tiny_family_of, tmp_path):
    check_logits_match_transformers(gguf_family(tiny_family_of("llama"), tmp_path))


def test_a_rope_freqs_tensor_of_the_wrong_length_is_refused(tmp_path):
    hf_dir = write_hf_dir(tmp_path / "hf", "llama")
    path = write_gguf(tmp_path / "l3.gguf", hf_dir, "llama", rope_factors={"rope_freqs.weight": np.ones(7, np.float32)})
    with pytest.raises(CorruptFileError, match=r"rope_freqs\.weight has shape \(7,\); a head of 16 dims rotates 8"):
        load_gguf(path)
