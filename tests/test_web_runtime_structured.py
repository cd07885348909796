"""Structured output and tool calls in the browser runtime (web_runtime/src/grammar.js, tool_calls.js) on a real
tiny site in headless Chromium (SwiftShader): a random Qwen2 whose chat template takes tools (Qwen2.5's shape),
which left alone writes noise, always writes JSON that validates against the request's schema, calls tools
with arguments that follow theirs (whole and streamed as OpenAI streams them), takes a tool's result back,
and writes the same greedy constrained output as the Python engine on the same build."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from hf_tiny import write_hf_dir
from serve.test_routes_tools import QWEN_TOOLS_TEMPLATE, SCHEMAS, TOOLS

pytestmark = pytest.mark.toolchain

_NAME = {"type": "string", "maxLength": 10}
JSON_SCHEMAS = {
    "flat": {
        "type": "object",
        "properties": {
            "name": _NAME,
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "ok": {"type": "boolean"},
        },
        "required": ["name", "age", "ok"],
    },
    "enum": {
        "type": "object",
        "properties": {"color": {"enum": ["red", "green", "blue"]}, "size": {"type": "string", "enum": ["S", "M"]}},
        "required": ["color", "size"],
    },
    "array": {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 1, "maxItems": 4}},
        "required": ["tags"],
    },
    "nested": {
        "type": "object",
        "properties": {
            "person": {
                "type": "object",
                "properties": {
                    "name": _NAME,
                    "address": {
                        "type": "object",
                        "properties": {"city": _NAME, "floor": {"type": "integer", "minimum": -2, "maximum": 99}},
                        "required": ["city", "floor"],
                    },
                },
                "required": ["name", "address"],
            }
        },
        "required": ["person"],
    },
    "array_of_objects": {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 9}, "done": {"type": "boolean"}},
                    "required": ["id", "done"],
                },
                "minItems": 1,
                "maxItems": 2,
            }
        },
        "required": ["items"],
    },
}
ASK = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from webbuild.commands.package import PackageOptions, package

    root = tmp_path_factory.mktemp("structured")
    path = write_hf_dir(root / "qwen-hf", "qwen2", seed=2)
    config = json.loads((path / "tokenizer_config.json").read_text())
    (path / "tokenizer_config.json").write_text(json.dumps(config | {"chat_template": QWEN_TOOLS_TEMPLATE}))
    options = PackageOptions(
        str(path), out=root / "site", quantizations=["q4f32_1"], context_window_size=1024, prefill_chunk_size=128
    )
    return package(options).site


@pytest.fixture(scope="module")
def tab(site: Path) -> Iterator[Any]:
    from webbuild.commands.bench import site_page

    with site_page(site) as (tab, _):
        yield tab


def _create(tab: Any, request: dict[str, Any]) -> dict[str, Any]:
    return tab.evaluate(f"(async () => window.webbuildApp.engine.chat.completions.create({json.dumps(request)}))()")


def _json_request(schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    fmt = {"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}}
    return {
        "messages": [{"role": "user", "content": "Describe it."}],
        "response_format": fmt,
        "max_tokens": 200,
    } | extra


@pytest.mark.parametrize("name", JSON_SCHEMAS)
def test_output_validates_against_the_schema(tab: Any, name: str) -> None:
    schema = JSON_SCHEMAS[name]
    for sampling in ({"temperature": 0}, {"temperature": 1, "seed": 3, "n": 2}):
        out = _create(tab, _json_request(schema, **sampling))
        for choice in out["choices"]:
            assert choice["finish_reason"] == "stop", choice
            jsonschema_rs.validator_for(schema).validate(json.loads(choice["message"]["content"]))


def test_an_invalid_schema_is_a_typed_error_on_response_format(tab: Any) -> None:
    script = """async (r) => {
      try { await window.webbuildApp.engine.chat.completions.create(r); return null; }
      catch (err) { return { name: err.name, param: err.param, code: err.code, message: err.message }; }
    }"""
    request = _json_request({"type": "integer", "minimum": 5, "maximum": 1})
    err = tab.evaluate(f"({script})({json.dumps(request)})")
    assert err["param"] == "response_format" and err["code"] == "invalid_request", err
    assert "minimum greater than maximum" in err["message"]


def _check_call(call: dict[str, Any]) -> dict[str, Any]:
    arguments = json.loads(call["function"]["arguments"])
    jsonschema_rs.validator_for(SCHEMAS[call["function"]["name"]]).validate(arguments)
    assert call["id"].startswith("call_") and call["type"] == "function"
    return arguments


def test_a_tool_call_round_trip(tab: Any) -> None:
    ask = {"messages": ASK, "tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False, "seed": 1}
    first = _create(tab, ask)
    choice = first["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    _check_call(call)
    history = [*ASK, choice["message"], {"role": "tool", "tool_call_id": call["id"], "content": '{"temperature": 21}'}]
    second = _create(tab, {"messages": history, "tools": TOOLS, "tool_choice": "none", "max_tokens": 8})
    assert second["choices"][0]["message"].get("tool_calls") is None
    shown = tab.evaluate(f"(async () => window.webbuildApp.engine.applyChatTemplate({json.dumps(history)}))()")
    assert '<tool_response>\n{"temperature": 21}\n</tool_response>' in shown


def test_streamed_calls_come_as_openai_deltas(tab: Any) -> None:
    # Sampled with a seed, as the REST tests do: greedy, this random model fills the call's JSON with whitespace
    # (the grammar allows it there, in both engines) until max_tokens.
    named = {"type": "function", "function": {"name": "get_weather"}}
    request = {"messages": ASK, "tools": TOOLS, "tool_choice": named, "temperature": 1, "seed": 1, "max_tokens": 300}
    script = """async (r) => {
      const engine = window.webbuildApp.engine;
      const chunks = [];
      for await (const c of await engine.chat.completions.create({ ...r, stream: true })) chunks.push(c);
      return { chunks, whole: await engine.chat.completions.create(r) };
    }"""
    out = tab.evaluate(f"({script})({json.dumps(request)})")
    deltas = [d for c in out["chunks"] for d in c["choices"][0]["delta"].get("tool_calls", [])]
    assert len(deltas) == 2, deltas
    assert deltas[0]["index"] == 0 and deltas[0]["type"] == "function" and deltas[0]["id"].startswith("call_")
    assert deltas[0]["function"] == {"name": "get_weather", "arguments": ""}
    [whole] = out["whole"]["choices"][0]["message"]["tool_calls"]
    assert deltas[1] == {"index": 0, "function": {"arguments": whole["function"]["arguments"]}}
    _check_call(whole)
    assert out["chunks"][-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_greedy_constrained_output_is_the_python_engines(tab: Any, site: Path) -> None:
    from webbuild.engine.engine import Engine

    engine = Engine(site, device="cpu")
    named = {"type": "function", "function": {"name": "get_time"}}
    requests = [
        _json_request(JSON_SCHEMAS["enum"], temperature=0),
        _json_request(JSON_SCHEMAS["array_of_objects"], temperature=0),
        {"messages": ASK, "tools": TOOLS, "tool_choice": named, "temperature": 0, "max_tokens": 300},
    ]
    for request in requests:
        ours = _create(tab, request)["choices"][0]
        theirs = engine.chat.completions.create(**request)["choices"][0]
        assert ours["finish_reason"] == theirs["finish_reason"]
        assert ours["message"]["content"] == theirs["message"]["content"]
        calls = [[c["function"] for c in choice["message"].get("tool_calls") or []] for choice in (ours, theirs)]
        assert calls[0] == calls[1]
