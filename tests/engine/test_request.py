"""The Python request contract agrees with the browser's (web_runtime/src/openai.js) on the shared cases, and
the parser accepts exactly what the field declarations (which /openapi.json is written from) say."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from webbuild.engine.request import (
    CHAT_FIELDS,
    COMPLETION_FIELDS,
    Request,
    check_model_limits,
    parse_chat_request,
    parse_completion_request,
)
from webbuild.errors import ContextLengthExceededError, InvalidRequestError, UnsupportedParameterError

FIXTURE = json.loads(
    (Path(__file__).parents[2] / "web_runtime/test/fixtures/request_cases.json").read_text(encoding="utf-8")
)
CASES, MODEL, MODEL_CASES = FIXTURE["cases"], FIXTURE["model"], FIXTURE["model_cases"]
PARSERS = {"chat": parse_chat_request, "completion": parse_completion_request}
FIELDS = {"chat": CHAT_FIELDS, "completion": COMPLETION_FIELDS}
MINIMAL = {"chat": {"messages": [{"role": "user", "content": "hi"}]}, "completion": {"prompt": "a"}}


def _flat(request: Request) -> dict[str, Any]:
    """A request as one flat dict, so a case's `expect` keys name Request or SamplingParams fields."""
    return {**vars(request), **vars(request.sampling)}


def _fields(body: Any, endpoint: str) -> dict[str, Any]:
    return _flat(PARSERS[endpoint](body, {}))


def _fit(request: Request, prompt_tokens: int, window: int = MODEL["context_window_size"]) -> Request:
    return check_model_limits(request, prompt_tokens, context_window_size=window, vocab_size=MODEL["vocab_size"])


def test_the_shared_cases_are_all_here():
    assert len(CASES) == 71
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


def test_the_shared_model_cases_cover_both_endpoints():
    assert len({c["name"] for c in MODEL_CASES}) == len(MODEL_CASES)
    assert {(c["endpoint"], c["ok"]) for c in MODEL_CASES} == {(e, ok) for e in PARSERS for ok in (True, False)}


@pytest.mark.parametrize("case", [c for c in MODEL_CASES if c["ok"]], ids=lambda c: c["name"])
def test_accepted_model_case(case):
    fields = _flat(_fit(PARSERS[case["endpoint"]](case["request"], {}), case["prompt_tokens"]))
    for key, value in case["expect"].items():
        assert fields[key] == value, key


@pytest.mark.parametrize("case", [c for c in MODEL_CASES if not c["ok"]], ids=lambda c: c["name"])
def test_refused_model_case(case):
    request = PARSERS[case["endpoint"]](case["request"], {})
    with pytest.raises(InvalidRequestError) as caught:
        _fit(request, case["prompt_tokens"])
    assert (caught.value.code, caught.value.param) == (case["code"], case["param"])


def test_model_errors_name_the_numbers_and_leave_the_request_alone():
    chat = parse_chat_request({**MINIMAL["chat"], "max_tokens": 23, "logit_bias": {"150": 1}})
    with pytest.raises(ContextLengthExceededError) as caught:
        _fit(chat, 40)
    assert "40" in caught.value.message and "32" in caught.value.message
    with pytest.raises(ContextLengthExceededError) as caught:
        _fit(chat, 10)
    assert all(n in caught.value.message for n in ("10", "23", "32"))
    with pytest.raises(InvalidRequestError) as caught:
        _fit(chat, 10, window=64)
    assert "150" in caught.value.message and "100" in caught.value.message
    omitted = parse_chat_request(MINIMAL["chat"])
    assert _fit(omitted, 10).sampling.max_tokens == 22
    assert omitted.sampling.max_tokens is None  # the caller's request is not changed


NUMERIC = [
    (endpoint, name)
    for endpoint, fields in FIELDS.items()
    for name, spec in fields.items()
    if spec.type in ("number", "integer") and (spec.minimum is not None or spec.maximum is not None)
]


@pytest.mark.parametrize(("endpoint", "name"), NUMERIC)
def test_the_parser_accepts_exactly_the_declared_range(endpoint, name):
    spec, parse = FIELDS[endpoint][name], PARSERS[endpoint]
    base = {**MINIMAL[endpoint], "logprobs": True} if name == "top_logprobs" else MINIMAL[endpoint]
    step = 1 if spec.type == "integer" else 0.5
    for bound, outside in ((spec.minimum, -step), (spec.maximum, step)):
        if bound is None:
            continue
        parse({**base, name: bound})
        with pytest.raises(InvalidRequestError) as caught:
            parse({**base, name: bound + outside})
        assert caught.value.param == name


@pytest.mark.parametrize(
    ("endpoint", "name"), [(e, n) for e, fields in FIELDS.items() for n, spec in fields.items() if spec.enum]
)
def test_values_outside_a_declared_enum_are_unsupported(endpoint, name):
    for value in FIELDS[endpoint][name].enum:
        PARSERS[endpoint]({**MINIMAL[endpoint], name: value})
    with pytest.raises(UnsupportedParameterError) as caught:
        PARSERS[endpoint]({**MINIMAL[endpoint], name: "something else"})
    assert caught.value.param == name


@pytest.mark.parametrize("endpoint", PARSERS)
def test_absent_fields_take_the_declared_defaults_and_null_means_absent(endpoint):
    parse, fields = PARSERS[endpoint], FIELDS[endpoint]
    minimal = _fields(MINIMAL[endpoint], endpoint)
    for name, spec in fields.items():
        if spec.default is not None:
            assert minimal[name] == spec.default, name
        if not spec.required:
            assert parse({**MINIMAL[endpoint], name: None}) == parse(MINIMAL[endpoint]), name


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
