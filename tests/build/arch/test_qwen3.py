"""Qwen3 beyond what test_families.py checks for every family: the thinking switch of its chat template, in
the template and through a request's chat_template_kwargs; refusals."""

from __future__ import annotations

import pytest
from family_checks import (
    CHUNK,
    check_token_ids_match_transformers,
)
from hf_tiny import make_hf_model

from webbuild.build.arch import get_architecture
from webbuild.errors import UnsupportedError


@pytest.mark.toolchain
def test_chat_template_ids_match_transformers_without_thinking(tiny_family_of):
    check_token_ids_match_transformers(tiny_family_of("qwen3"), enable_thinking=False)


def test_projection_biases_are_refused():
    config = make_hf_model("qwen3").config.to_dict() | {"attention_bias": True}
    with pytest.raises(UnsupportedError, match="attention_bias = True is not supported"):
        get_architecture("qwen3").config_from_hf(config, 128, CHUNK)


@pytest.mark.toolchain
def test_a_requests_chat_template_kwargs_turn_thinking_off(tiny_family_of):
    tiny = tiny_family_of("qwen3")
    messages = [{"role": "user", "content": "hi"}]
    thinking = tiny.engine.chat.completions.create(messages=messages, max_tokens=1)
    plain = tiny.engine.chat.completions.create(
        messages=messages, max_tokens=1, chat_template_kwargs={"enable_thinking": False}
    )
    empty_think = len(tiny.engine.encode_messages(messages, {"enable_thinking": False}))
    assert plain["usage"]["prompt_tokens"] == empty_think > thinking["usage"]["prompt_tokens"]
