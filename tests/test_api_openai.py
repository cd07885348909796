"""The REST API through the official ``openai`` client, against uvicorn on loopback, on the tiny CPU engine."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

import openai
import pytest
from tiny_llama import tiny_llama_model

from webbuild.server import create_app, serving

pytestmark = pytest.mark.toolchain

HI = [{"role": "user", "content": "Say something."}]


@pytest.fixture(scope="module")
def engine():
    from webbuild.engine import Engine
    from webbuild.prepare import prepare_model

    return Engine(prepare_model(tiny_llama_model().source(), "q0f32"))


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
        ({"messages": HI, "n": 3}, "n"),
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
    from webbuild.engine import Engine

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
