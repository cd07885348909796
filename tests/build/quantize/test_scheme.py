"""The scheme table and the per-tensor policy: which layout each kind of weight gets, and overriding it."""

from __future__ import annotations

import pytest

from webbuild.build.quantize import EMBEDDING_CHOICES, QUANTIZATIONS, get_scheme
from webbuild.errors import UnsupportedError


def test_every_scheme_pairs_an_f16_and_an_f32_form() -> None:
    """The browser swaps f16 for f32 by name (web_runtime config.js) and by needs_shader_f16."""
    for name, scheme in QUANTIZATIONS.items():
        assert scheme.needs_shader_f16 == ("f16" in name) == (scheme.model_dtype == "float16")
        twin = QUANTIZATIONS[name.replace("f16", "f32") if "f16" in name else name.replace("f32", "f16")]
        assert (twin.linear, twin.embeddings) == (scheme.linear, scheme.embeddings)


def test_policies() -> None:
    assert get_scheme("q4f32_m").policy == {"linear": "q4m", "embedding": "q8", "head": "q8"}
    assert get_scheme("q8f16_s").policy == {"linear": "q8", "embedding": "q8", "head": "q8"}
    assert get_scheme("q4f16_1").policy == {"linear": "q4", "embedding": "q4", "head": "q4"}  # MLC's format
    assert get_scheme("q0f32").layout("linear") is None and not get_scheme("q0f32").quantized
    assert get_scheme("q4f32_m").layout("head").name == "q8"


def test_embeddings_override_changes_embedding_and_head_only() -> None:
    scheme = get_scheme("q4f32_m", "float")
    assert scheme.name == "q4f32_m" and scheme.layout("embedding") is None and scheme.layout("head") is None
    assert scheme.layout("linear").name == "q4m"
    assert get_scheme("q4f32_m").with_policy(scheme.policy) == scheme
    assert get_scheme("q4f32_m").with_policy(None) == get_scheme("q4f32_m")


def test_unknown_names_are_refused_listing_the_valid_ones() -> None:
    with pytest.raises(UnsupportedError) as err:
        get_scheme("q3f16_0")
    assert err.value.param == "quantization" and all(name in err.value.message for name in QUANTIZATIONS)
    with pytest.raises(UnsupportedError) as err:
        get_scheme("q4f32_m", "q2")
    assert err.value.param == "embeddings" and all(choice in err.value.message for choice in EMBEDDING_CHOICES)
    with pytest.raises(UnsupportedError):  # a bundle whose policy changes the linear layout is not this scheme
        get_scheme("q4f32_m").with_policy({"linear": "q8", "embedding": "q8", "head": "q8"})
