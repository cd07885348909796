"""Grammar-constrained decoding: a tiny random-weight model, which left alone writes noise, always writes JSON
that validates against the request's schema; schemas the engine cannot follow are 400s."""

from __future__ import annotations

import builtins
import json

import jsonschema_rs
import numpy as np
import pytest
from tiny_llama import tiny_llama_model

from webbuild.build.prepare import prepare_model
from webbuild.engine.engine import Engine
from webbuild.engine.grammar import allowed_tokens, json_safe
from webbuild.errors import InvalidRequestError, MissingDependencyError, UnsupportedParameterError

pytestmark = pytest.mark.toolchain

HI = [{"role": "user", "content": "Describe a person."}]
_NAME = {"type": "string", "maxLength": 12}
SCHEMAS = {
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
                        "properties": {"city": _NAME, "zip": {"type": "integer"}},
                        "required": ["city", "zip"],
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
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {"id": {"type": "integer"}, "kind": {"enum": ["x", "y"]}},
                    "required": ["id", "kind"],
                },
            }
        },
        "required": ["items"],
    },
    "numbers_and_nulls": {
        "type": "object",
        "properties": {
            "score": {"type": "number", "minimum": -1e6, "maximum": 1e6},
            "note": {"anyOf": [{"type": "null"}, {"type": "boolean"}]},
        },
        "required": ["score", "note"],
    },
}


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(prepare_model(tiny_llama_model(seed=3).source(context_window_size=512), "q0f32"))


def _content(engine: Engine, **kw) -> tuple[str, str]:
    out = engine.chat.completions.create(messages=HI, **{"max_tokens": 200, **kw})
    choice = out["choices"][0]
    return choice["message"]["content"], choice["finish_reason"]


def test_length_limited_strings_become_patterns_of_unescaped_characters():
    safe = json_safe({"type": "array", "items": {"type": "string", "minLength": 2, "maxLength": 5}})
    assert safe == {"type": "array", "items": {"type": "string", "pattern": r"^[ !#-\[\]-\u07ff]{2,5}$"}}
    kept = {"type": "string", "maxLength": 3, "pattern": "^a+$"}
    assert json_safe(kept) == kept


def test_the_bitmask_reads_as_the_compiled_kernel_reads_it():
    bitmask = np.array([0b1010, -(2**31)], dtype=np.int32)  # tokens 1 and 3; the top bit of word 1 is token 63
    assert np.flatnonzero(allowed_tokens(bitmask, 64)).tolist() == [1, 3, 63]
    assert allowed_tokens(bitmask, 40).size == 40


@pytest.mark.parametrize("name", SCHEMAS)
def test_output_validates_against_the_schema_for_every_seed(engine, name):
    schema = SCHEMAS[name]
    validator = jsonschema_rs.validator_for(schema)
    for seed in range(4):
        fmt = {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
        text, finish = _content(engine, seed=seed, temperature=1.0, response_format=fmt)
        assert finish == "stop", text
        validator.validate(json.loads(text))


def test_unconstrained_output_of_the_same_model_is_not_json(engine):
    texts = [_content(engine, seed=seed, max_tokens=20)[0] for seed in range(4)]
    assert not any(_parses(t) for t in texts)


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def test_json_object_mode_gives_an_object(engine):
    for seed in range(3):
        text, finish = _content(engine, seed=seed, response_format={"type": "json_object"})
        if finish == "stop":
            assert isinstance(json.loads(text), dict)
        else:  # an object the model never closed within max_tokens: it still starts as one
            assert text.startswith("{")


def test_greedy_constrained_choices_agree_and_stream_the_same_text(engine):
    fmt = {"type": "json_schema", "json_schema": {"name": "e", "schema": SCHEMAS["enum"]}}
    whole = engine.chat.completions.create(messages=HI, temperature=0, n=2, response_format=fmt)
    texts = {c["message"]["content"] for c in whole["choices"]}
    assert len(texts) == 1
    chunks = engine.chat.completions.create(messages=HI, temperature=0, stream=True, response_format=fmt)
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert {streamed} == texts


@pytest.mark.parametrize(
    "schema",
    [{"type": "nonsense"}, {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}],
    ids=["unknown type", "dangling ref"],
)
def test_schemas_the_engine_cannot_follow_are_invalid_requests(engine, schema):
    fmt = {"type": "json_schema", "json_schema": {"name": "bad", "schema": schema}}
    with pytest.raises(InvalidRequestError) as caught:
        engine.chat.completions.create(messages=HI, response_format=fmt)
    assert caught.value.param == "response_format"
    assert caught.value.status == 400
    assert "/project/" not in caught.value.message  # xgrammar's source location is not for the user


def test_tools_on_a_model_whose_template_has_none_are_refused(engine):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    with pytest.raises(UnsupportedParameterError) as caught:
        engine.chat.completions.create(messages=HI, tools=tools)
    assert caught.value.param == "tools"
    engine.chat.completions.create(messages=HI, tools=tools, tool_choice="none", max_tokens=2)  # shown no tools


def test_without_xgrammar_a_constrained_request_names_the_extra(monkeypatch):
    from webbuild.engine.grammar import Grammars

    real_import = builtins.__import__

    def no_xgrammar(name, *args, **kwargs):
        if name == "xgrammar":
            raise ImportError("No module named 'xgrammar'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_xgrammar)
    with pytest.raises(MissingDependencyError) as caught:
        Grammars("{}", 10, [0]).response_format({"type": "json_object"})
    assert caught.value.status == 501
    assert caught.value.param == "response_format"
    assert "webbuild-llm[structured]" in (caught.value.tip or "")
