"""The Python request parser agrees with the browser's (web_runtime/openai.js) on the shared cases, and the
response builders produce OpenAI's shapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from webbuild.errors import InvalidRequestError, UnsupportedParameterError
from webbuild.openai_api import ResponseBuilder, parse_chat_request, parse_completion_request, usage

CASES = json.loads(
    (Path(__file__).parents[1] / "web_runtime/test/fixtures/request_cases.json").read_text(encoding="utf-8")
)["cases"]
PARSERS = {"chat": parse_chat_request, "completion": parse_completion_request}


def _fields(body: Any, endpoint: str) -> dict[str, Any]:
    """The parsed request as one flat dict, so a case's `expect` keys name Request or SamplingParams fields."""
    request = PARSERS[endpoint](body, {})
    return {**vars(request), **vars(request.sampling)}


def test_the_shared_cases_are_all_here():
    assert len(CASES) == 39
    assert len({c["name"] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", [c for c in CASES if c.get("ok")], ids=lambda c: c["name"])
def test_accepted_case(case):
    fields = _fields(case["request"], case["endpoint"])
    for key, value in case.get("expect", {}).items():
        assert fields[key] == value, key


@pytest.mark.parametrize("case", [c for c in CASES if not c.get("ok")], ids=lambda c: c["name"])
def test_refused_case(case):
    with pytest.raises(InvalidRequestError) as caught:
        PARSERS[case["endpoint"]](case["request"], {})
    assert (caught.value.code, caught.value.param) == (case["error"]["code"], case["error"]["param"])


def test_developer_role_renders_as_system_and_text_parts_are_joined():
    parts = [{"type": "text", "text": "be "}, {"type": "text", "text": "brief"}]
    request = parse_chat_request({"messages": [{"role": "developer", "content": parts}, {"role": "assistant"}]})
    assert request.messages == [{"role": "system", "content": "be brief"}, {"role": "assistant", "content": ""}]


def test_model_defaults_fill_only_absent_fields():
    defaults = {"temperature": 0.6, "top_p": 0.9}
    request = parse_chat_request({"messages": [{"role": "user", "content": "hi"}], "top_p": 0.5}, defaults)
    assert (request.sampling.temperature, request.sampling.top_p) == (0.6, 0.5)


def test_completion_only_and_conflicting_fields():
    with pytest.raises(UnsupportedParameterError):
        parse_completion_request({"prompt": "a", "best_of": 2})
    body = {"messages": [{"role": "user", "content": "a"}], "max_tokens": 2, "max_completion_tokens": 3}
    with pytest.raises(InvalidRequestError) as caught:
        parse_chat_request(body)
    assert caught.value.param == "max_completion_tokens"


def test_chat_chunks_carry_role_then_content_then_finish_reason():
    builder = ResponseBuilder(model="m", chat=True)
    first, middle, last = builder.chunk(None, role=True), builder.chunk("Hi"), builder.chunk(None, "stop")
    assert builder.id.startswith("chatcmpl-")
    assert {first["id"], middle["id"], last["id"]} == {builder.id}
    assert first["object"] == "chat.completion.chunk" and first["model"] == "m"
    assert [c["choices"][0]["delta"] for c in (first, middle, last)] == [{"role": "assistant"}, {"content": "Hi"}, {}]
    assert [c["choices"][0]["finish_reason"] for c in (first, middle, last)] == [None, None, "stop"]


def test_text_completion_chunks():
    builder = ResponseBuilder(model="m", chat=False)
    chunk = builder.chunk("abc")
    assert builder.id.startswith("cmpl-")
    assert chunk["object"] == "text_completion"
    assert chunk["choices"] == [{"index": 0, "text": "abc", "logprobs": None, "finish_reason": None}]
    assert builder.chunk("", "length")["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("chat", [True, False])
def test_usage_chunk_has_no_choices(chat):
    builder = ResponseBuilder(model="m", chat=chat)
    chunk = builder.usage_chunk(usage(3, 2))
    assert chunk["choices"] == []
    assert chunk["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert chunk["object"] == ("chat.completion.chunk" if chat else "text_completion")


def test_non_streaming_completions_include_usage():
    stats = {"decode_tokens_per_s": 10.0}
    chat = ResponseBuilder(model="m", chat=True).complete("Hello", "stop", usage(4, 1, stats))
    assert chat["object"] == "chat.completion"
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": "Hello"}
    assert chat["choices"][0]["finish_reason"] == "stop"
    assert chat["usage"] == {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5, "extra": stats}
    text = ResponseBuilder(model="m", chat=False).complete("Hello", "length", usage(4, 1))
    assert text["object"] == "text_completion"
    assert text["choices"][0]["text"] == "Hello" and text["usage"]["total_tokens"] == 5
