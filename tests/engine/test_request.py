"""The Python request parser agrees with the browser's (web_runtime/openai.js) on the shared cases, and the
response builders produce OpenAI's shapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from webbuild.engine.request import (
    Choice,
    ResponseBuilder,
    TokenLogprob,
    parse_chat_request,
    parse_completion_request,
    usage,
)
from webbuild.errors import InvalidRequestError, UnsupportedParameterError

CASES = json.loads(
    (Path(__file__).parents[2] / "web_runtime/test/fixtures/request_cases.json").read_text(encoding="utf-8")
)["cases"]
PARSERS = {"chat": parse_chat_request, "completion": parse_completion_request}


def _fields(body: Any, endpoint: str) -> dict[str, Any]:
    """The parsed request as one flat dict, so a case's `expect` keys name Request or SamplingParams fields."""
    request = PARSERS[endpoint](body, {})
    return {**vars(request), **vars(request.sampling)}


def test_the_shared_cases_are_all_here():
    assert len(CASES) == 49
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


def test_echo_with_logprobs_is_refused_but_each_alone_is_fine():
    """Prompt log probabilities are not computed: echo and logprobs are refused together (not in the shared
    fixture because the browser decides this on its own)."""
    with pytest.raises(UnsupportedParameterError) as caught:
        parse_completion_request({"prompt": "a", "echo": True, "logprobs": 0})
    assert caught.value.param == "echo"
    assert parse_completion_request({"prompt": "a", "echo": True}).echo
    assert parse_completion_request({"prompt": "a", "echo": False, "logprobs": 1}).top_logprobs == 1


def test_logprobs_fields_per_endpoint():
    hi = [{"role": "user", "content": "a"}]
    request = parse_chat_request({"messages": hi, "logprobs": True})
    assert (request.logprobs, request.top_logprobs, request.n) == (True, 0, 1)
    for bad in ({"logprobs": 0}, {"logprobs": False, "top_logprobs": 1}, {"logprobs": True, "top_logprobs": 1.5}):
        with pytest.raises(InvalidRequestError):
            parse_chat_request({"messages": hi, **bad})
    with pytest.raises(InvalidRequestError) as caught:
        parse_completion_request({"prompt": "a", "top_logprobs": 2})  # chat's field; completions use logprobs
    assert caught.value.param == "top_logprobs"
    assert parse_completion_request({"prompt": "a", "n": 16.0}).n == 16


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
    chat = ResponseBuilder(model="m", chat=True).complete([Choice("Hello", "stop")], usage(4, 1, stats))
    assert chat["object"] == "chat.completion"
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": "Hello"}
    assert chat["choices"][0]["finish_reason"] == "stop" and chat["choices"][0]["logprobs"] is None
    assert chat["usage"] == {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5, "extra": stats}
    text = ResponseBuilder(model="m", chat=False).complete([Choice("Hello", "length")], usage(4, 1))
    assert text["object"] == "text_completion"
    assert text["choices"][0]["text"] == "Hello" and text["usage"]["total_tokens"] == 5


def test_choices_are_indexed_in_order():
    out = ResponseBuilder(model="m", chat=True).complete([Choice("a", "stop"), Choice("b", "length")], usage(2, 3))
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in out["choices"]] == [
        (0, "a", "stop"),
        (1, "b", "length"),
    ]
    chunk = ResponseBuilder(model="m", chat=False).chunk("x", index=2)
    assert chunk["choices"][0]["index"] == 2


ENTRIES = [
    TokenLogprob("Hé", -0.25, (("Hé", -0.25), ("Ha", -1.5)), offset=0),
    TokenLogprob("!", -2.0, (("?", -0.5), ("!", -2.0)), offset=2),
]


def test_chat_logprobs_shape():
    chat = ResponseBuilder(model="m", chat=True)
    choice = chat.complete([Choice("Hé!", "stop", ENTRIES)], usage(1, 2))["choices"][0]
    assert choice["logprobs"] == {
        "content": [
            {
                "token": "Hé",
                "logprob": -0.25,
                "bytes": [72, 195, 169],
                "top_logprobs": [
                    {"token": "Hé", "logprob": -0.25, "bytes": [72, 195, 169]},
                    {"token": "Ha", "logprob": -1.5, "bytes": [72, 97]},
                ],
            },
            {
                "token": "!",
                "logprob": -2.0,
                "bytes": [33],
                "top_logprobs": [
                    {"token": "?", "logprob": -0.5, "bytes": [63]},
                    {"token": "!", "logprob": -2.0, "bytes": [33]},
                ],
            },
        ]
    }
    assert chat.chunk("!", index=1, logprobs=ENTRIES[1:])["choices"][0]["logprobs"]["content"][0]["token"] == "!"
    assert chat.chunk("!", logprobs=[])["choices"][0]["logprobs"] == {"content": []}
    assert chat.chunk("!")["choices"][0]["logprobs"] is None


def test_completion_logprobs_are_columns():
    text = ResponseBuilder(model="m", chat=False)
    choice = text.complete([Choice("Hé!", "stop", ENTRIES)], usage(1, 2))["choices"][0]
    assert choice["logprobs"] == {
        "tokens": ["Hé", "!"],
        "token_logprobs": [-0.25, -2.0],
        "top_logprobs": [{"Hé": -0.25, "Ha": -1.5}, {"?": -0.5, "!": -2.0}],
        "text_offset": [0, 2],
    }
    same_text = TokenLogprob("\ufffd", -1.0, (("\ufffd", -1.0), ("\ufffd", -3.0)))
    assert text.chunk("", logprobs=[same_text])["choices"][0]["logprobs"]["top_logprobs"] == [{"\ufffd": -1.0}]
