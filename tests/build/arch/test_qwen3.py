"""Qwen3 (per-head Q/K RMSNorm, no biases, tied head) against transformers, GGUF, the thinking switch of its chat
template, refusals, and the browser build against the CPU engine."""

from __future__ import annotations

import pytest
from family_checks import (
    CHUNK,
    check_browser_agrees_with_cpu,
    check_gguf_loads_to_the_same_weights,
    check_greedy_tokens_match_transformers,
    check_logits_match_transformers,
    check_token_ids_match_transformers,
    tiny_family,
)
from hf_tiny import make_hf_model

from webbuild.build.arch import get_architecture
from webbuild.errors import UnsupportedError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_family("qwen3", tmp_path_factory.mktemp("qwen3"))


@pytest.mark.toolchain
def test_logits_match_transformers_at_every_position(tiny):
    check_logits_match_transformers(tiny)


@pytest.mark.toolchain
def test_greedy_tokens_match_transformers(tiny):
    check_greedy_tokens_match_transformers(tiny)


@pytest.mark.toolchain
def test_chat_template_ids_match_transformers_with_and_without_thinking(tiny):
    check_token_ids_match_transformers(tiny)
    check_token_ids_match_transformers(tiny, enable_thinking=False)


@pytest.mark.toolchain
def test_browser_build_agrees_with_the_cpu_engine(tiny, tmp_path):
    check_browser_agrees_with_cpu(tiny, tmp_path)


def test_gguf_loads_to_the_same_weights(tmp_path):
    check_gguf_loads_to_the_same_weights(tmp_path, "qwen3")


def test_projection_biases_are_refused():
    config = make_hf_model("qwen3").config.to_dict() | {"attention_bias": True}
    with pytest.raises(UnsupportedError, match="attention_bias = True is not supported"):
        get_architecture("qwen3").config_from_hf(config, 128, CHUNK)


@pytest.mark.toolchain
def test_a_requests_chat_template_kwargs_turn_thinking_off(tiny):
    messages = [{"role": "user", "content": "hi"}]
    thinking = tiny.engine.chat.completions.create(messages=messages, max_tokens=1)
    plain = tiny.engine.chat.completions.create(
        messages=messages, max_tokens=1, chat_template_kwargs={"enable_thinking": False}
    )
    empty_think = len(tiny.engine.encode_messages(messages, {"enable_thinking": False}))
    assert plain["usage"]["prompt_tokens"] == empty_think > thinking["usage"]["prompt_tokens"]
