"""Tool calls parsed out of a model's text, whole or piece by piece, in each format a chat template teaches."""

from __future__ import annotations

import json

import pytest

from webbuild.engine.tool_calls import FORMATS, ToolCallParser, call_deltas, split_tool_calls

HERMES, LLAMA = FORMATS["hermes"], FORMATS["llama3_json"]
TWO_CALLS = (
    'Let me look.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
)


def _names_and_arguments(calls):
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls]


def test_hermes_calls_are_split_from_the_content():
    content, calls = split_tool_calls(HERMES, TWO_CALLS)
    assert content == "Let me look."
    assert _names_and_arguments(calls) == [("get_weather", {"city": "Paris"}), ("get_time", {})]
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in calls)
    assert len({c["id"] for c in calls}) == 2


def test_llama_calls_take_their_parameters_as_arguments():
    content, calls = split_tool_calls(LLAMA, '{"name": "get_weather", "parameters": {"city": "Oslo"}}')
    assert content is None
    assert _names_and_arguments(calls) == [("get_weather", {"city": "Oslo"})]


def test_text_without_a_complete_call_stays_content():
    assert split_tool_calls(HERMES, "Just words.") == ("Just words.", [])
    cut = '<tool_call>\n{"name": "get_weather", "argum'
    assert split_tool_calls(HERMES, "Hi " + cut) == ("Hi " + cut, [])


@pytest.mark.parametrize("size", [1, 2, 5, 13])
def test_pieces_give_the_same_content_and_calls_and_never_show_part_of_a_call(size):
    parser = ToolCallParser(HERMES)
    items = []
    for start in range(0, len(TWO_CALLS), size):
        items += parser.push(TWO_CALLS[start : start + size])
    items += parser.flush()
    content = "".join(v for k, v in items if k == "content")
    assert content == "Let me look."
    assert "<" not in content
    assert _names_and_arguments([v for k, v in items if k == "call"]) == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {}),
    ]


def test_a_streamed_call_is_its_name_then_its_arguments():
    _, [call] = split_tool_calls(HERMES, '<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>')
    head, arguments = call_deltas(3, call)
    assert head == {"index": 3, "id": call["id"], "type": "function", "function": {"name": "f", "arguments": ""}}
    assert arguments == {"index": 3, "function": {"arguments": '{"x": 1}'}}
