"""The REST API through the official ``openai`` client, against uvicorn on loopback, on the tiny engine.

The engine runs on the CPU; ``pytest --engine-device cuda`` runs the same suite on the CUDA build (GPU machine).
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import socket
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from tiny_llama import tiny_llama_model

from webbuild.serve.app import create_app, serving

pytestmark = pytest.mark.toolchain

HI = [{"role": "user", "content": "Say something."}]


@pytest.fixture(scope="module")
def engine(engine_device: str):
    from webbuild.build.prepare import prepare_model
    from webbuild.engine.engine import Engine

    return Engine(prepare_model(tiny_llama_model().source(), "q0f32"), device=engine_device)


@pytest.fixture(scope="module")
def url(engine) -> Iterator[str]:
    with serving(create_app(engine=engine)) as url:
        yield url


@pytest.fixture(scope="module")
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "v1", api_key="unused", max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def model(engine) -> str:
    return engine.model_name


def greedy_chat(client: openai.OpenAI, model: str, **kw) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(model=model, messages=HI, temperature=0, **kw)


def aborted_requests(url: str) -> float:
    """The server's count of requests aborted by their client leaving."""
    metrics = httpx.get(url + "metrics").text.splitlines()
    return float(next(line for line in metrics if line.startswith("webbuild_aborted_requests_total")).split()[-1])


def test_models(client: openai.OpenAI, model: str) -> None:
    assert [m.id for m in client.models.list()] == [model]
    assert client.models.retrieve(model).id == model


def test_chat_completion(client: openai.OpenAI, model: str) -> None:
    out = greedy_chat(client, model, max_tokens=8)
    assert out.object == "chat.completion" and out.model == model
    choice = out.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert out.usage.completion_tokens <= 8
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_streamed_chat_equals_the_non_streamed_one(client: openai.OpenAI, model: str) -> None:
    full = greedy_chat(client, model, max_tokens=12)
    chunks = list(greedy_chat(client, model, max_tokens=12, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == full.choices[0].finish_reason
    assert all(c.usage is None for c in chunks)


def test_finished_streams_are_not_counted_as_aborted(client: openai.OpenAI, model: str, url: str) -> None:
    aborted = aborted_requests(url)
    assert list(greedy_chat(client, model, max_tokens=3, stream=True))
    assert aborted_requests(url) == aborted


def test_include_usage(client: openai.OpenAI, model: str) -> None:
    chunks = list(greedy_chat(client, model, max_tokens=5, stream=True, stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert 1 <= last.usage.completion_tokens <= 5


def test_text_completions(client: openai.OpenAI, model: str) -> None:
    out = client.completions.create(model=model, prompt="the", max_tokens=6, temperature=0)
    assert out.object == "text_completion"
    streamed = client.completions.create(model=model, prompt="the", max_tokens=6, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == out.choices[0].text


def test_token_id_prompt(client: openai.OpenAI, model: str) -> None:
    out = client.completions.create(model=model, prompt=[5, 17, 42], max_tokens=3, temperature=0)
    assert out.usage.prompt_tokens == 3


def test_max_tokens_ends_with_length(client: openai.OpenAI, model: str) -> None:
    out = client.completions.create(model=model, prompt=[5, 17, 42], max_tokens=4, temperature=0)
    if out.choices[0].finish_reason == "stop":  # the random model may pick its end token: rare, but legal
        assert out.usage.completion_tokens < 4
    else:
        assert out.choices[0].finish_reason == "length" and out.usage.completion_tokens == 4


def test_stop_sequence_ends_the_text_and_is_not_emitted(client: openai.OpenAI, model: str) -> None:
    full = client.completions.create(model=model, prompt=[5, 17, 42], max_tokens=24, temperature=0)
    text = full.choices[0].text
    stop = next((ch for ch in text[2:] if ch.isprintable() and ch != "\ufffd"), None)
    if stop is None:
        pytest.skip("the random model wrote nothing printable to stop on")
    for stream in (False, True):
        out = client.completions.create(
            model=model, prompt=[5, 17, 42], max_tokens=24, temperature=0, stop=[stop], stream=stream
        )
        got = "".join(c.choices[0].text for c in out if c.choices) if stream else out.choices[0].text
        assert got == text[: text.index(stop)]
        assert stop not in got


def test_same_seed_same_output(client: openai.OpenAI, model: str) -> None:
    def sample(seed: int) -> str:
        out = client.completions.create(model=model, prompt="the", max_tokens=16, temperature=1.0, seed=seed)
        return out.choices[0].text

    assert sample(7) == sample(7)


def test_concurrent_requests_all_complete(client: openai.OpenAI, model: str) -> None:
    def one(i: int) -> str:
        return greedy_chat(client, model, max_tokens=6).choices[0].message.content

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(one, range(6)))
    assert len(set(results)) == 1  # greedy: batched requests equal each other


def test_logprobs_and_n_parse_in_the_client(client: openai.OpenAI, model: str) -> None:
    out = greedy_chat(client, model, max_tokens=6, n=2, logprobs=True, top_logprobs=3)
    assert [c.index for c in out.choices] == [0, 1]
    assert out.choices[0].message.content == out.choices[1].message.content  # greedy
    content = out.choices[0].logprobs.content
    assert content == out.choices[1].logprobs.content
    for entry in content:
        assert entry.bytes == list(entry.token.encode()) and entry.logprob <= 0
        assert len(entry.top_logprobs) == 3 and entry.top_logprobs[0].logprob == entry.logprob
    single = greedy_chat(client, model, max_tokens=6)
    assert single.choices[0].logprobs is None
    assert out.usage.prompt_tokens == single.usage.prompt_tokens
    assert out.usage.completion_tokens == 2 * single.usage.completion_tokens

    text = client.completions.create(model=model, prompt=[5, 17, 42], max_tokens=5, temperature=0, logprobs=2, n=2)
    logprobs = text.choices[1].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs)
    assert len(logprobs.text_offset) == len(logprobs.tokens)
    assert all(len(top) <= 2 for top in logprobs.top_logprobs)


def test_streamed_choices_through_the_client(client: openai.OpenAI, model: str) -> None:
    stream = client.chat.completions.create(
        model=model, messages=HI, max_tokens=5, n=3, seed=5, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 3
    finished = [c.choices[0].index for c in chunks[:-1] if c.choices[0].finish_reason]
    assert sorted(finished) == [0, 1, 2]
    full = client.chat.completions.create(model=model, messages=HI, max_tokens=5, n=3, seed=5)
    for choice in full.choices:
        text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1] if c.choices[0].index == choice.index)
        assert text == choice.message.content


def test_a_client_that_leaves_aborts_its_non_streamed_request(url: str, engine, monkeypatch) -> None:
    """The request's sequence is removed and its KV cache pages freed once the connection closes."""
    aborted = aborted_requests(url)
    runner = engine.scheduler.runner
    real_decode = runner.decode_batch

    def slow_decode(steps):  # a long reply: about 5 s for 100 tokens
        time.sleep(0.05)
        return real_decode(steps)

    monkeypatch.setattr(runner, "decode_batch", slow_decode)
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    no_stop = {str(t): -100 for t in engine.stop_token_ids}  # so the reply runs to max_tokens
    body = json.dumps({"prompt": [5, 17, 42], "max_tokens": 100, "temperature": 0, "logit_bias": no_stop})
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n{body}".encode()
        )
        deadline = time.monotonic() + 10
        while not engine.metrics()["running"]:
            assert time.monotonic() < deadline, "the request never started"
            time.sleep(0.01)
    deadline = time.monotonic() + 2  # far less than the reply would take
    while engine.metrics()["running"] or engine.metrics()["kv_cache_used_tokens"]:
        assert time.monotonic() < deadline, f"still running after the client left: {engine.metrics()}"
        time.sleep(0.01)
    while aborted_requests(url) != aborted + 1:  # counted once the engine call has returned
        assert time.monotonic() < deadline + 5
        time.sleep(0.01)


def test_a_second_turn_reuses_the_first_ones_kv_and_says_so_in_usage(
    client: openai.OpenAI, model: str, engine, url: str, prefill_counter
) -> None:
    prefilled = prefill_counter(engine)
    messages = [{"role": "user", "content": "Tell me about the sea."}]
    first = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=6)
    messages += [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "More?"},
    ]
    prefilled.clear()
    second = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=6)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached > first.usage.prompt_tokens // 2  # the first turn's prompt (and maybe some of its reply)
    assert sum(prefilled) == second.usage.prompt_tokens - cached  # only the new part was prefilled
    # The same request streamed: its whole prompt but the last token is held now, and the usage chunk says so.
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=messages,
            temperature=0,
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == second.usage.prompt_tokens - 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == second.choices[0].message.content
    metrics = httpx.get(url + "metrics").text
    reused = float(re.search(r"^webbuild_prefix_cache_reused_tokens_total (\S+)$", metrics, re.M).group(1))
    assert reused >= cached + second.usage.prompt_tokens - 1


# ---- errors through the client ---------------------------------------------------------------------------


def test_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-4o", messages=HI)
    assert info.value.code == "model_not_found" and info.value.param == "model"


def test_prompt_longer_than_the_context_window(client: openai.OpenAI, model: str, engine) -> None:
    window = engine.model.cfg.context_window_size
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=model, prompt=[5] * (window + 10), max_tokens=2)
    assert info.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "the " * 200}], stream=True)
    assert info.value.code == "context_length_exceeded"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": HI, "temperature": 3}, "temperature"),
        ({"messages": HI, "n": 17}, "n"),
        ({"messages": HI, "top_logprobs": 3}, "top_logprobs"),
    ],
)
def test_bad_requests_raise_bad_request_error(client: openai.OpenAI, model: str, kwargs: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=model, **kwargs)
    assert info.value.status_code == 400
    assert info.value.param == param
    assert client.models.list()  # and the server is still up


def test_wrong_api_key_is_an_authentication_error(engine) -> None:
    with serving(create_app(engine=engine, api_key="right")) as url:
        wrong = openai.OpenAI(base_url=url + "v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            wrong.models.list()
        assert info.value.code == "invalid_api_key"
        right = openai.OpenAI(base_url=url + "v1", api_key="right", max_retries=0)
        assert right.chat.completions.create(model=engine.model_name, messages=HI, max_tokens=2).choices


@pytest.mark.slow
def test_smollm2_answers_through_the_openai_client() -> None:
    from webbuild.engine.engine import Engine

    engine = Engine("smollm2-135m-instruct", quantization="q4f32_1")
    with serving(create_app(engine=engine)) as url:
        client = openai.OpenAI(base_url=url + "v1", api_key="unused", max_retries=0)
        out = client.chat.completions.create(
            model=engine.model_name,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=24,
            temperature=0,
        )
    assert "Paris" in out.choices[0].message.content
