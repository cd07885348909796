"""webbuild.serve.openapi: the served spec matches the routes and the request contract, and fuzzing it
(schemathesis) finds no server error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Mount, Route
from starlette.testclient import TestClient
from tiny_llama import tiny_llama_model

from webbuild.serve.app import create_app, serving
from webbuild.serve.openapi import openapi_spec
from webbuild.serve.security import default_allowed_hosts

CASES = json.loads(
    (Path(__file__).parents[2] / "web_runtime/test/fixtures/request_cases.json").read_text(encoding="utf-8")
)["cases"]
# Rules where one field's validity depends on another's value; the parser checks them, the schema cannot say them.
CROSS_FIELD_CASES = {
    "stream_options without stream",
    "top_logprobs needs logprobs",
    "json_schema needs json_schema",
    "tool_choice names a tool",
    "tool_choice required needs tools",
    "a tool message names its call",
    "response_format with tools",
}
# Rules on a string's content the declarations leave to the parser: function names, arguments as JSON text.
CONTENT_CASES = {"tool names are identifiers", "tool call arguments are a JSON object"}
# JSON Schema has no word for "well-formed Unicode": a lone surrogate is a string to it.
UNICODE_CASES = {c["name"] for c in CASES if "lone surrogate" in c["name"]}


def _validator(spec: dict, name: str) -> jsonschema_rs.Validator:
    return jsonschema_rs.validator_for({**spec, "$ref": f"#/components/schemas/{name}"})


@pytest.fixture(scope="module")
def live_url() -> Iterator[str]:
    from webbuild.build.prepare import prepare_model
    from webbuild.engine.engine import Engine

    engine = Engine(prepare_model(tiny_llama_model().source(), "q0f32"))
    app = create_app(engine=engine, allowed_hosts=default_allowed_hosts("127.0.0.1"))  # as `webbuild serve` makes it
    with serving(app) as url:
        yield url.rstrip("/")


def test_every_documented_path_is_routed() -> None:
    from fake_engine import FakeEngine

    app = create_app(engine=FakeEngine())
    routed = set()
    for route in app.routes:
        if isinstance(route, Mount):
            routed |= {route.path + r.path for r in route.routes if isinstance(r, Route)}
        elif isinstance(route, Route):
            routed.add(route.path)
    documented = {p.replace("{model}", "{model:path}") for p in openapi_spec()["paths"]}
    assert documented == routed - {"/openapi.json"}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_the_request_schemas_accept_what_the_parser_accepts(case: dict) -> None:
    """The schemas are written from the declarations the parser checks against, so the shared cases agree."""
    name = {"chat": "ChatCompletionRequest", "completion": "CompletionRequest"}[case["endpoint"]]
    valid = _validator(openapi_spec(), name).is_valid(case["request"])
    assert valid == (case.get("ok", False) or case["name"] in CROSS_FIELD_CASES | CONTENT_CASES | UNICODE_CASES)


def test_the_served_spec_has_the_models_sampling_defaults() -> None:
    from fake_engine import FakeEngine

    spec = TestClient(create_app(engine=FakeEngine())).get("/openapi.json").json()
    chat = spec["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert chat["temperature"]["anyOf"][0]["default"] == 0.7  # the fake model's, not the declared 1.0
    assert chat["temperature"]["anyOf"][0]["maximum"] == 2
    assert chat["messages"]["items"] == {"$ref": "#/components/schemas/Message"}
    completion = spec["components"]["schemas"]["CompletionRequest"]["properties"]
    assert completion["max_tokens"]["anyOf"][0]["default"] == 16


def _fuzz_schema(mode: GenerationMode) -> schemathesis.schemas.BaseSchema:
    fuzzed = schemathesis.openapi.from_dict(openapi_spec())
    fuzzed.config.generation.update(modes=[mode])
    return fuzzed


# Bounded: ~700 requests (2 phases x 6 operations x 60 examples) in about half a minute on 2 cores.
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
FUZZ_CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.mark.toolchain
@_fuzz_schema(GenerationMode.POSITIVE).parametrize()
@FUZZ
def test_fuzzing_valid_requests_finds_no_server_error(case: schemathesis.Case, live_url: str) -> None:
    case.call_and_validate(base_url=live_url, timeout=30, checks=FUZZ_CHECKS)


@pytest.mark.toolchain
@_fuzz_schema(GenerationMode.NEGATIVE).parametrize()
@FUZZ
def test_fuzzing_invalid_requests_finds_no_server_error_and_refuses_them(
    case: schemathesis.Case, live_url: str
) -> None:
    case.call_and_validate(base_url=live_url, timeout=30, checks=FUZZ_CHECKS)
