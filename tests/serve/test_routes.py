"""webbuild.serve.routes on a scripted engine: routes, the error envelope, auth, SSE framing and aborts, metrics.

The same API on the real (tiny) engine, through the official openai client, is in test_api_openai.py.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from typing import Any

import httpx
import pytest
from fake_engine import WORDS, FakeEngine
from starlette.testclient import TestClient

from webbuild.errors import ContextLengthExceededError, InvalidRequestError
from webbuild.serve.app import create_app, serving
from webbuild.serve.loading import RETRY_AFTER_S, EngineLoader

CHAT = "/v1/chat/completions"
JSON = {"content-type": "application/json"}
HI = [{"role": "user", "content": "Capital of France?"}]


@pytest.fixture()
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture()
def client(engine: FakeEngine) -> TestClient:
    return TestClient(create_app(engine=engine), raise_server_exceptions=False)


def events(text: str) -> list[Any]:
    """The ``data:`` payloads of an SSE body, JSON-decoded except the final ``[DONE]``."""
    assert text.endswith("\n\n")
    out = []
    for block in text.strip("\n").split("\n\n"):
        assert block.startswith("data: "), block
        data = block.removeprefix("data: ")
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def assert_envelope(response: httpx.Response, status: int, code: str | None, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["code"] == code
    assert error["param"] == param
    return error


# ---- routes ----------------------------------------------------------------------------------------------


def test_models_lists_the_served_model(client: TestClient) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["fake-model-q4f32_1"]
    assert body["data"][0]["object"] == "model"
    assert client.get("/v1/models/fake-model-q4f32_1").json()["id"] == "fake-model-q4f32_1"
    assert_envelope(client.get("/v1/models/gpt-4"), 404, "model_not_found", "model")


def test_health(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "model": "fake-model-q4f32_1"}


def test_chat_completion_passes_the_parsed_request_to_the_engine(client: TestClient, engine: FakeEngine) -> None:
    response = client.post(CHAT, json={"messages": HI, "max_tokens": 3, "model": "fake-model-q4f32_1"})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "".join(WORDS[:3])
    assert body["choices"][0]["finish_reason"] == "length"
    request = engine.requests[-1]
    assert request.messages == HI and request.sampling.max_tokens == 3
    assert request.sampling.temperature == 0.7  # the model's default fills what the request leaves out


def test_text_completion(client: TestClient) -> None:
    body = client.post("/v1/completions", json={"prompt": "The capital of France", "max_tokens": 2}).json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "".join(WORDS[:2])


def test_streaming_is_sse_ending_with_done(client: TestClient) -> None:
    response = client.post(CHAT, json={"messages": HI, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    got = events(response.text)
    assert got[-1] == "[DONE]"
    chunks = got[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "".join(WORDS)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"] for c in chunks)  # no usage chunk unless asked


def test_include_usage_adds_a_final_usage_chunk(client: TestClient) -> None:
    body = {"messages": HI, "stream": True, "stream_options": {"include_usage": True}}
    chunks = events(client.post(CHAT, json=body).text)[:-1]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": len(WORDS),
        "total_tokens": 5 + len(WORDS),
        "extra": {"time_to_first_token_s": 0.01},
    }


def test_text_completion_stream(client: TestClient) -> None:
    got = events(client.post("/v1/completions", json={"prompt": "x", "stream": True, "max_tokens": 7}).text)
    assert got[-1] == "[DONE]"
    assert "".join(c["choices"][0]["text"] for c in got[:-1]) == "".join(WORDS)


# ---- errors ----------------------------------------------------------------------------------------------

BAD_REQUESTS = [
    # (body as sent, expected code, expected param)
    (b"{not json", "invalid_request", None),
    (b"", "invalid_request", None),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', "invalid_request", None),
    (b"\xff\xfe\x00garbage", "invalid_request", None),
    (b"[1, 2, 3]", "invalid_request", None),
    (b'"just a string"', "invalid_request", None),
    (b"[" * 30_000 + b"]" * 30_000, "invalid_request", None),  # deeper than the parser recurses
    (json.dumps({"messages": []}).encode(), "invalid_request", "messages"),
    (json.dumps({"messages": "hi"}).encode(), "invalid_request", "messages"),
    (json.dumps({}).encode(), "invalid_request", "messages"),
    (json.dumps({"messages": [{"role": "wizard", "content": "hi"}]}).encode(), "invalid_request", "messages[0].role"),
    (json.dumps({"messages": [{"role": "user"}]}).encode(), "invalid_request", "messages[0].content"),
    (json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(), "invalid_request", "messages[0].content"),
    (json.dumps({"messages": HI, "temperature": "hot"}).encode(), "invalid_request", "temperature"),
    (json.dumps({"messages": HI, "temperature": 9}).encode(), "invalid_request", "temperature"),
    (json.dumps({"messages": HI, "top_p": -1}).encode(), "invalid_request", "top_p"),
    (json.dumps({"messages": HI, "max_tokens": 0}).encode(), "invalid_request", "max_tokens"),
    (json.dumps({"messages": HI, "max_tokens": 1.5}).encode(), "invalid_request", "max_tokens"),
    (json.dumps({"messages": HI, "max_tokens": True}).encode(), "invalid_request", "max_tokens"),
    (json.dumps({"messages": HI, "stop": ["a", "b", "c", "d", "e"]}).encode(), "invalid_request", "stop"),
    (json.dumps({"messages": HI, "stream": "yes"}).encode(), "invalid_request", "stream"),
    (json.dumps({"messages": HI, "stream_options": {"include_usage": True}}).encode(), "invalid_request",
     "stream_options"),
    (json.dumps({"messages": HI, "seed": 2**60}).encode(), "invalid_request", "seed"),
    (json.dumps({"messages": HI, "logit_bias": {"abc": 1}}).encode(), "invalid_request", "logit_bias"),
    (json.dumps({"messages": HI, "frobnicate": 1}).encode(), "invalid_request", "frobnicate"),
    (json.dumps({"messages": HI, "n": 17}).encode(), "invalid_request", "n"),
    (json.dumps({"messages": HI, "top_logprobs": 2}).encode(), "invalid_request", "top_logprobs"),
    (json.dumps({"messages": HI, "tools": [{"type": "function"}]}).encode(), "invalid_request", "tools[0].function"),
    (json.dumps({"messages": HI, "model": 42}).encode(), "invalid_request", "model"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "code", "param"), BAD_REQUESTS)
def test_bad_chat_requests_get_400_in_the_envelope(client: TestClient, body: bytes, code: str, param: str) -> None:
    error = assert_envelope(client.post(CHAT, content=body, headers=JSON), 400, code, param)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": 5}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": [1, -2]}, "prompt"),
        ({"prompt": "x", "echo": "yes"}, "echo"),
        ({"prompt": "x", "logprobs": 6}, "logprobs"),
        ({"prompt": "x", "messages": HI}, "messages"),
    ],
)
def test_bad_completion_requests_get_400(client: TestClient, body: dict, param: str) -> None:
    assert_envelope(client.post("/v1/completions", json=body), 400, "invalid_request", param)


@pytest.mark.parametrize("path", [CHAT, "/v1/completions"])
def test_the_engines_model_checks_reach_the_client(client: TestClient, engine: FakeEngine, path: str) -> None:
    """The engine checks the request against its model after tokenizing (the fake: 5 prompt tokens, a window
    of 64, 100 token ids); the API adds no checks of its own and passes its errors on."""
    body = {"messages": HI} if path == CHAT else {"prompt": "x"}
    assert client.post(path, json=body | {"max_tokens": 59}).status_code == 200
    error = assert_envelope(client.post(path, json=body | {"max_tokens": 60}), 400, "context_length_exceeded",
                            "max_tokens")  # fmt: skip
    assert "64" in error["message"]
    assert_envelope(client.post(path, json=body | {"logit_bias": {"100": 1}}), 400, "invalid_request", "logit_bias")
    assert client.post(path, json=body | {"logit_bias": {"99": 1}}).status_code == 200


def test_engine_errors_keep_their_code(engine: FakeEngine, client: TestClient) -> None:
    engine.create_error = ContextLengthExceededError("the prompt has 99 tokens; the window is 64", param="messages")
    for stream in (False, True):
        error = assert_envelope(
            client.post(CHAT, json={"messages": HI, "stream": stream}), 400, "context_length_exceeded", "messages"
        )
        assert "99 tokens" in error["message"]


def test_unknown_model_is_404(client: TestClient) -> None:
    response = client.post(CHAT, json={"messages": HI, "model": "gpt-4o"})
    assert_envelope(response, 404, "model_not_found", "model")


def test_a_body_larger_than_the_context_window_holds_is_413_and_ends_the_connection(client: TestClient) -> None:
    from webbuild.serve.routes import body_limit

    limit = body_limit(64)  # the fake model's window
    assert limit < 1 << 20  # the 7.9 MB body of the probe is refused unread
    fits = json.dumps({"messages": [{"role": "user", "content": "x" * (limit - 100)}], "max_tokens": 1})
    assert client.post(CHAT, content=fits, headers=JSON).status_code == 200
    big = json.dumps({"messages": [{"role": "user", "content": "x" * limit}]})
    response = client.post(CHAT, content=big, headers=JSON)
    assert_envelope(response, 413, "request_too_large")
    assert response.headers["connection"] == "close"


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_api_calls_need_a_json_content_type(client: TestClient, engine: FakeEngine, content_type: str | None) -> None:
    """What a page on another origin can send without a CORS preflight is never application/json."""
    body = json.dumps({"messages": HI})
    headers = {"content-type": content_type} if content_type else {}
    assert_envelope(client.post(CHAT, content=body, headers=headers), 415, "unsupported_media_type")
    assert not engine.requests  # nothing generated
    for ok in ("application/json", "application/json; charset=utf-8", "application/vnd.api+json"):
        assert client.post(CHAT, content=body, headers={"content-type": ok}).status_code == 200


def test_api_responses_are_not_sniffed(client: TestClient) -> None:
    for response in (client.get("/v1/models"), client.post(CHAT, json={"messages": HI}), client.get("/v1/nope")):
        assert response.headers["x-content-type-options"] == "nosniff"


def test_a_refused_cors_preflight_is_in_the_envelope(engine: FakeEngine) -> None:
    client = TestClient(create_app(engine=engine, allow_origins=["https://app.example"]))
    preflight = {"access-control-request-method": "POST", "access-control-request-headers": "content-type"}
    ok = client.options(CHAT, headers={"origin": "https://app.example", **preflight})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://app.example"
    refused = client.options(CHAT, headers={"origin": "https://evil.example", **preflight})
    error = assert_envelope(refused, 400, "cors_refused")
    assert "origin" in error["message"] and "--allow-origins" in error["message"]


def test_a_lone_surrogate_is_a_400_not_a_500(client: TestClient) -> None:
    body = b'{"messages": [{"role": "user", "content": "a\\ud800"}]}'
    error = assert_envelope(
        client.post(CHAT, content=body, headers=JSON), 400, "invalid_request", "messages[0].content"
    )
    assert "surrogate" in error["message"]
    body = b'{"prompt": "\\udfff"}'
    assert_envelope(client.post("/v1/completions", content=body, headers=JSON), 400, "invalid_request", "prompt")


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", CHAT, 405, "method_not_allowed"),
        ("PUT", "/v1/completions", 405, "method_not_allowed"),
        ("DELETE", "/v1/models", 405, "method_not_allowed"),
        ("POST", "/v1/embeddings", 404, "not_found"),
        ("GET", "/v1/nope", 404, "not_found"),
        ("GET", "/v1", 404, "not_found"),
        ("GET", "/index.html", 404, "not_found"),  # no site given: API only
    ],
)
def test_wrong_methods_and_unknown_routes(client: TestClient, method: str, path: str, status: int, code: str) -> None:
    response = client.request(method, path)
    assert_envelope(response, status, code)
    if status == 405:
        assert response.headers["allow"]


def test_an_engine_bug_is_a_500_in_the_envelope_and_the_server_lives_on(engine: FakeEngine, client: TestClient):
    engine.create_error = RuntimeError("boom")
    error = assert_envelope(client.post(CHAT, json={"messages": HI}), 500, "internal_error")
    assert error["type"] == "server_error"
    assert "boom" not in error["message"]  # internals go to the log, not to the client
    engine.create_error = None
    assert client.post(CHAT, json={"messages": HI}).status_code == 200


def test_an_error_in_the_first_chunk_is_still_a_plain_http_error(engine: FakeEngine, client: TestClient) -> None:
    engine.fail_after, engine.failure = 0, InvalidRequestError("bad stop", param="stop")
    response = client.post("/v1/completions", json={"prompt": "x", "stream": True})
    assert_envelope(response, 400, "invalid_request", "stop")
    assert engine.closed.is_set()


@pytest.mark.parametrize(
    ("failure", "code", "type_"),
    [
        (RuntimeError("kernel exploded"), "internal_error", "server_error"),
        (ContextLengthExceededError("ran out of context", param="max_tokens"), "context_length_exceeded",
         "invalid_request_error"),
    ],
)  # fmt: skip
def test_an_error_after_the_stream_started_is_one_error_event(
    engine: FakeEngine, client: TestClient, failure: Exception, code: str, type_: str
) -> None:
    engine.fail_after, engine.failure = 2, failure
    response = client.post(CHAT, json={"messages": HI, "stream": True})
    assert response.status_code == 200
    got = events(response.text)
    assert "[DONE]" not in got
    assert [c["choices"][0]["delta"].get("content") for c in got[1:-1]] == WORDS[:2]
    assert set(got[-1]) == {"error"}
    assert got[-1]["error"]["code"] == code and got[-1]["error"]["type"] == type_
    assert engine.closed.is_set()


# ---- auth and CORS ---------------------------------------------------------------------------------------


@pytest.fixture()
def site(tmp_path):
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_text("<!doctype html><title>t</title>")
    return root


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer wrong"}, {"authorization": "sekrit"}, {"authorization": "Basic sekrit"}],
)
def test_api_key_is_required_on_v1(engine: FakeEngine, site, headers: dict) -> None:
    client = TestClient(create_app(site, engine=engine, api_key="sekrit"))
    for method, path in (("GET", "/v1/models"), ("POST", CHAT), ("POST", "/v1/completions")):
        response = client.request(method, path, headers=headers, json={"messages": HI})
        error = assert_envelope(response, 401, "invalid_api_key")
        assert error["type"] == "invalid_request_error"
        assert response.headers["www-authenticate"] == "Bearer"
    assert engine.requests == []


def test_the_right_key_opens_v1_and_the_site_and_health_stay_public(engine: FakeEngine, site) -> None:
    client = TestClient(create_app(site, engine=engine, api_key="sekrit"))
    auth = {"authorization": "Bearer sekrit"}
    assert client.post(CHAT, headers=auth, json={"messages": HI}).status_code == 200
    assert client.get("/v1/models", headers=auth).status_code == 200
    assert client.get("/").status_code == 200
    assert client.get("/health").status_code == 200
    assert client.get("/metrics").status_code == 200


def test_cors_is_same_origin_only_by_default(client: TestClient) -> None:
    response = client.get("/v1/models", headers={"origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in response.headers
    preflight = client.options(
        CHAT, headers={"origin": "https://elsewhere.example", "access-control-request-method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_allowed_origins_get_cors_headers(engine: FakeEngine) -> None:
    client = TestClient(create_app(engine=engine, allow_origins=["https://app.example"]))
    preflight = client.options(
        CHAT,
        headers={
            "origin": "https://app.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    response = client.post(CHAT, json={"messages": HI}, headers={"origin": "https://app.example"})
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    other = client.post(CHAT, json={"messages": HI}, headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_any_origin(engine: FakeEngine) -> None:
    client = TestClient(create_app(engine=engine, allow_origins=["*"]))
    response = client.get("/v1/models", headers={"origin": "https://anyone.example"})
    assert response.headers["access-control-allow-origin"] == "*"


# ---- metrics ---------------------------------------------------------------------------------------------


def test_metrics_in_prometheus_text_format(client: TestClient) -> None:
    client.post(CHAT, json={"messages": HI, "max_tokens": 3})
    client.post(CHAT, json={"messages": HI, "stream": True})
    client.post(CHAT, json={"messages": []})
    client.post("/v1/completions", json={"prompt": "x", "model": "nope"})
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert 'webbuild_requests_total{endpoint="/v1/chat/completions",status="200"} 2.0' in text
    assert 'webbuild_requests_total{endpoint="/v1/chat/completions",status="400"} 1.0' in text
    assert 'webbuild_requests_total{endpoint="/v1/completions",status="404"} 1.0' in text
    assert "webbuild_prompt_tokens_total 10.0" in text  # the stream's usage is counted though not asked for
    assert f"webbuild_completion_tokens_total {3.0 + len(WORDS)}" in text
    assert "webbuild_time_to_first_token_seconds_count 2.0" in text
    assert f"webbuild_inter_token_latency_seconds_count {len(WORDS) - 1}.0" in text
    assert "webbuild_running 1.0" in text and "webbuild_waiting 2.0" in text
    assert "webbuild_kv_cache_used_tokens 48.0" in text and "webbuild_kv_cache_capacity_tokens 128.0" in text
    assert "webbuild_kv_cache_usage_ratio 0.375" in text
    assert "webbuild_kv_cache_cached_tokens 32.0" in text and "webbuild_prefix_cache_reused_tokens_total 7.0" in text


def test_openapi_spec_is_served(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models"} <= set(spec["paths"])


# ---- client disconnects ----------------------------------------------------------------------------------


def test_a_client_that_disconnects_aborts_its_stream() -> None:
    engine = FakeEngine(delay=0.02, endless=True)
    with serving(create_app(engine=engine)) as url:
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        body = json.dumps({"messages": HI, "stream": True}).encode()
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            received = b""
            while received.count(b"data: ") < 3:
                received += sock.recv(4096)
            assert b"200 OK" in received.split(b"\r\n", 1)[0]
        assert engine.closed.wait(5), "the engine iterator was not closed after the client left"
        # The server is still fine.
        assert httpx.get(url + "health").status_code == 200
        metrics = httpx.get(url + "metrics").text
        assert "webbuild_aborted_requests_total 1.0" in metrics


def test_a_client_that_disconnects_aborts_its_non_streamed_request() -> None:
    """The engine gets an ``abort`` event with every non-streamed request and the API sets it when the client
    leaves; the fake engine's request waits for exactly that."""
    engine = FakeEngine(endless=True)
    with serving(create_app(engine=engine)) as url:
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        body = json.dumps({"messages": HI}).encode()
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            deadline = time.monotonic() + 5
            while not engine.requests and time.monotonic() < deadline:  # the request reached the engine
                time.sleep(0.01)
        assert engine.closed.wait(5), "the engine was not told to abort after the client left"
        counted = 'webbuild_requests_total{endpoint="/v1/chat/completions",status="499"} 1.0'
        deadline = time.monotonic() + 5
        while counted not in (metrics := httpx.get(url + "metrics").text) and time.monotonic() < deadline:
            time.sleep(0.01)  # the API counts the request once the engine call has returned
        assert counted in metrics and "webbuild_aborted_requests_total 1.0" in metrics


def test_concurrent_streams_do_not_block_each_other() -> None:
    """Engine calls run in worker threads: slow streams overlap instead of running one after the other."""
    import concurrent.futures

    engine = FakeEngine(delay=0.05)
    with serving(create_app(engine=engine)) as url, httpx.Client(base_url=url) as http:

        def one(_: int) -> str:
            with http.stream("POST", "v1/chat/completions", json={"messages": HI, "stream": True}) as r:
                return r.read().decode()

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(one, range(4)))
    assert all(events(r)[-1] == "[DONE]" for r in results)
    assert engine.max_busy >= 2  # two engine calls ran at the same time


# ---- while the engine loads, and after its load failed ---------------------------------------------------

API_CALLS = [
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/fake-model-q4f32_1", None),
    ("POST", CHAT, {"messages": HI}),
    ("POST", "/v1/completions", {"prompt": "x"}),
]


@pytest.mark.parametrize(("method", "path", "body"), API_CALLS)
def test_while_the_engine_loads_the_api_answers_503_with_retry_after(method: str, path: str, body: Any) -> None:
    client = TestClient(create_app(engine=EngineLoader(FakeEngine)))  # never started: loading for good
    response = client.request(method, path, json=body)
    error = assert_envelope(response, 503, "model_loading")
    assert error["type"] == "server_error" and "loading" in error["message"]
    assert response.headers["retry-after"] == str(RETRY_AFTER_S)


def test_while_the_engine_loads_health_is_503_and_metrics_and_the_spec_answer(caplog) -> None:
    client = TestClient(create_app(engine=EngineLoader(FakeEngine)))
    health = client.get("/health")
    assert (health.status_code, health.json()) == (503, {"status": "loading"})
    client.post(CHAT, json={"messages": HI})
    metrics = client.get("/metrics")
    assert metrics.status_code == 200  # the server's own counters, without engine gauges yet
    assert 'webbuild_requests_total{endpoint="/v1/chat/completions",status="503"} 1.0' in metrics.text
    assert "webbuild_running" not in metrics.text
    assert client.get("/openapi.json").status_code == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # waiting is not a server error


def test_once_the_engine_is_loaded_health_and_the_api_answer() -> None:
    release = threading.Event()
    loader = EngineLoader(lambda: release.wait(30) and FakeEngine())
    client = TestClient(create_app(engine=loader))
    loader.start()
    assert client.get("/health").status_code == 503
    release.set()
    assert loader.done.wait(10)
    assert client.get("/health").json() == {"status": "ok", "model": "fake-model-q4f32_1"}
    reply = client.post(CHAT, json={"messages": HI, "max_tokens": 2})
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] == "".join(WORDS[:2])


def test_after_a_failed_load_health_and_the_api_name_the_error(caplog) -> None:
    def load() -> FakeEngine:
        raise ContextLengthExceededError("context_window_size 99999 is larger than the model's 2048")

    loader = EngineLoader(load)
    client = TestClient(create_app(engine=loader), raise_server_exceptions=False)
    loader.start()
    assert loader.done.wait(10)
    health = client.get("/health")
    assert health.status_code == 503
    assert health.json() == {"status": "error", "message": "context_window_size 99999 is larger than the model's 2048"}
    for method, path, body in API_CALLS:
        response = client.request(method, path, json=body)
        error = assert_envelope(response, 503, "model_load_failed")
        assert error["message"] == "The model failed to load: context_window_size 99999 is larger than the model's 2048"
        assert "retry-after" not in response.headers  # retrying will not help
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # each request does not log it again
