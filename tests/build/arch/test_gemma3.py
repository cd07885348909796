"""Gemma 3 text beyond what test_families.py checks for every family: local and global layers with their own
RoPE, the sliding window's limit on the context, refusals."""

from __future__ import annotations

import pytest
from family_checks import (
    CHUNK,
)
from hf_tiny import make_hf_model

from webbuild.build.arch import get_architecture
from webbuild.errors import UnsupportedError


def test_local_and_global_layers_rotate_with_their_own_bases():
    cfg = get_architecture("gemma3_text").config_from_hf(make_hf_model("gemma3").config.to_dict(), 128, CHUNK)
    assert cfg.sliding_layers == (0, 2)
    assert cfg.rope_of(0).inv_freq[1] == pytest.approx(1e4 ** (-2 / 256))
    assert cfg.rope_of(1).inv_freq[1] == pytest.approx(1e6 ** (-2 / 256) / 8)  # global: linear scaling, factor 8
    assert cfg.context_window_size == 128 and cfg.softmax_scale == 64**-0.5


def test_the_sliding_window_limits_the_context_window():
    config = make_hf_model("gemma3").config.to_dict()
    assert get_architecture("gemma3_text").config_from_hf(config, 32768, CHUNK).context_window_size == 256


@pytest.mark.parametrize("field", ["final_logit_softcapping", "attn_logit_softcapping"])
def test_softcapping_is_refused(field):
    config = make_hf_model("gemma3").config.to_dict() | {field: 30.0}
    with pytest.raises(UnsupportedError, match=f"{field} = 30.0 is not supported"):
        get_architecture("gemma3_text").config_from_hf(config, 128, CHUNK)
