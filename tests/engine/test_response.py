"""The response builders produce OpenAI's shapes for chat and text completions, whole and streamed."""

from __future__ import annotations

import pytest

from webbuild.engine.response import Choice, ResponseBuilder, TokenLogprob, usage


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
