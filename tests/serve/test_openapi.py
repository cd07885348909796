"""webbuild.serve.openapi: the served spec matches the routes, and fuzzing it (schemathesis) finds no server error."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Mount, Route
from tiny_llama import tiny_llama_model

from webbuild.serve.app import create_app, serving
from webbuild.serve.openapi import openapi_spec

schema = schemathesis.openapi.from_dict(openapi_spec())


@pytest.fixture(scope="module")
def live_url() -> Iterator[str]:
    from webbuild.build.prepare import prepare_model
    from webbuild.engine.engine import Engine

    engine = Engine(prepare_model(tiny_llama_model().source(), "q0f32"))
    with serving(create_app(engine=engine)) as url:
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


@pytest.mark.toolchain
@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_fuzzing_finds_no_server_error(case: schemathesis.Case, live_url: str) -> None:
    case.call_and_validate(
        base_url=live_url,
        timeout=30,
        checks=[
            schemathesis.checks.not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            negative_data_rejection,
        ],
    )
