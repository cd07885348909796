"""The Llama weight map covers every parameter the definition declares, with matching shapes."""

from __future__ import annotations

import pytest
from tiny_llama import tiny_llama_model

from webbuild.build.arch import get_architecture
from webbuild.build.prepare import parameter_specs
from webbuild.build.quantize import QUANTIZATIONS, param_layout
from webbuild.errors import UnsupportedError


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("quant", sorted(QUANTIZATIONS))
def test_weight_map_covers_every_parameter(tied, quant):
    model = tiny_llama_model(tied=tied)
    config, tensors = model.config, model.tensors
    arch = get_architecture("llama")
    cfg = arch.config_from_hf(config, 128, 16)
    scheme = QUANTIZATIONS[quant]
    stored = {}
    for name, arr in arch.weights(tensors, cfg, "tiny").items():
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
