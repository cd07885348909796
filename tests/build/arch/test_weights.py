"""GGUF metadata as HF config fields: the RoPE metadata and factor tensors as ``rope_scaling`` (what llama.cpp
computes from them, or a refusal naming what has no exact counterpart), and the tokens that end generation as
``eos_token_id``. The files llama.cpp's converter writes are checked end to end in test_families.py,
test_llama.py and test_phi3.py; these are the other combinations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from webbuild.build.arch.weights import GGUFKeys, end_token_ids, rope_scaling
from webbuild.errors import CorruptFileError, UnsupportedError

LONG, SHORT = np.linspace(2, 5, 8, dtype=np.float32), np.linspace(1, 3, 8, dtype=np.float32)


def keys(factors: dict[str, np.ndarray], metadata: dict[str, object] | None = None) -> GGUFKeys:
    """A Phi-3 GGUF's keys: ``metadata`` without the ``phi3.`` prefix, and the factor tensors."""
    meta = {"general.architecture": "phi3"} | {f"phi3.{k}": v for k, v in (metadata or {}).items()}
    return GGUFKeys(meta, "m.gguf", factors)


LONGROPE = {"rope_factors_long.weight": LONG, "rope_factors_short.weight": SHORT}


def test_longrope_tensors_become_transformers_longrope_with_its_default_attention_factor():
    default = np.float32(math.sqrt(1 + math.log(32) / math.log(4096)))  # as the converter writes it: float32
    k = keys(LONGROPE, {"rope.scaling.original_context_length": 4096, "rope.scaling.attn_factor": default})
    assert rope_scaling(k, 16, 131072) == {
        "rope_type": "longrope",
        "short_factor": SHORT.tolist(),
        "long_factor": LONG.tolist(),
        "original_max_position_embeddings": 4096,
    }


def test_a_stored_attention_factor_other_than_the_default_is_kept():
    """The converter writes YaRN's 0.1 ln(s) + 1 for a Phi-3 config labelled yarn; llama.cpp applies it."""
    yarn = np.float32(0.1 * math.log(32) + 1)
    k = keys(LONGROPE, {"rope.scaling.original_context_length": 4096, "rope.scaling.attn_factor": yarn})
    assert rope_scaling(k, 16, 131072)["attention_factor"] == float(str(yarn))


def test_rope_freqs_divide_every_pair_at_any_context_length():
    assert rope_scaling(keys({"rope_freqs.weight": SHORT}), 16, 8192) == {
        "rope_type": "longrope",
        "short_factor": SHORT.tolist(),
        "long_factor": SHORT.tolist(),
        "original_max_position_embeddings": 8192,
    }


@pytest.mark.parametrize(
    ("factors", "metadata", "error", "message"),
    [
        ({"rope_factors_long.weight": LONG}, {}, CorruptFileError, "expected rope_freqs.weight alone, or"),
        ({"rope_freqs.weight": LONG[:7]}, {}, CorruptFileError, r"shape \(7,\); a head of 16 dims rotates 8 pairs"),
        ({"rope_freqs.weight": LONG}, {"rope.scaling.type": "linear"}, UnsupportedError, "'linear' together with"),
        ({}, {"rope.scaling.type": "yarn"}, UnsupportedError, "RoPE scaling 'yarn' in GGUF metadata"),
        ({}, {"rope.scaling.attn_factor": 1.2}, UnsupportedError, "attn_factor 1.2 without frequency-factor"),
    ],
)
def test_what_has_no_exact_counterpart_is_refused(factors, metadata, error, message):
    with pytest.raises(error, match=message):
        rope_scaling(keys(factors, metadata), 16, 4096)


# --- the tokens that end generation ------------------------------------------------------------------------

VOCAB = {"tokenizer.ggml.tokens": [f"t{i}" for i in range(200)]}


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"tokenizer.ggml.eos_token_id": 1}, [1]),
        ({"tokenizer.ggml.eos_token_id": 1, "tokenizer.ggml.eot_token_id": 106}, [1, 106]),  # Gemma 3 instruct
        (  # eos, end of turn, end of message: Llama 3.1 instruct's <|end_of_text|>, <|eot_id|>, <|eom_id|>
            {
                "tokenizer.ggml.eos_token_id": 101,
                "tokenizer.ggml.eot_token_id": 109,
                "tokenizer.ggml.eom_token_id": 108,
            },
            [101, 109, 108],
        ),
        ({"tokenizer.ggml.eos_token_id": 106, "tokenizer.ggml.eot_token_id": 106}, [106]),  # eos is the turn end
        ({"tokenizer.ggml.eos_token_id": 1, "tokenizer.ggml.eos_token_ids": [1, 106, 50]}, [1, 106, 50]),  # Ollama
        ({"tokenizer.ggml.eot_token_id": 106}, [106]),
        ({}, []),
    ],
)
def test_eos_then_the_end_of_turn_and_message_tokens_end_generation(metadata, expected):
    assert end_token_ids(VOCAB | metadata, "m.gguf") == expected


def test_an_end_token_past_the_vocabulary_is_left_out_as_llama_cpp_does():
    meta = VOCAB | {
        "tokenizer.ggml.eos_token_id": 1,
        "tokenizer.ggml.eot_token_id": 200,
        "tokenizer.ggml.eom_token_id": 7,
    }
    assert end_token_ids(meta, "m.gguf") == [1, 7]
