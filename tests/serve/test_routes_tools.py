"""Tool calls over REST with the official ``openai`` client, on a tiny random Qwen2 whose chat template is
shaped like Qwen2.5's (tools in the system turn, calls in <tool_call> tags, results as <tool_response>)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema_rs
import openai
import pytest
from hf_tiny import write_hf_dir

from webbuild.serve.app import create_app, serving

pytestmark = pytest.mark.toolchain

QWEN_TOOLS_TEMPLATE = """\
{%- if tools %}<|im_start|>system
You may call functions. Their signatures, one per line:
<tools>
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}</tools>
For each call write <tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% endif %}
{%- for m in messages %}
{%- if m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant
{{ m.content }}{% for c in m.tool_calls %}<tool_call>
{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% elif m.role == 'tool' %}<|im_start|>user
<tool_response>
{{ m.content }}
</tool_response><|im_end|>
{% else %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 10}, "unit": {"enum": ["C", "F"]}},
    "required": ["city", "unit"],
}
TIME = {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
ASK = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, engine_device: str):
    from webbuild.engine.engine import Engine

    path = write_hf_dir(tmp_path_factory.mktemp("qwen"), "qwen2", seed=2)
    config = json.loads((path / "tokenizer_config.json").read_text())
    (path / "tokenizer_config.json").write_text(json.dumps(config | {"chat_template": QWEN_TOOLS_TEMPLATE}))
    return Engine(Path(path), device=engine_device, quantization="q0f32")


@pytest.fixture(scope="module")
def client(engine) -> Iterator[openai.OpenAI]:
    with serving(create_app(engine=engine)) as url:
        yield openai.OpenAI(base_url=url + "v1", api_key="unused", max_retries=0, timeout=60)


def _check_call(call) -> dict:
    arguments = json.loads(call.function.arguments)
    jsonschema_rs.validator_for(SCHEMAS[call.function.name]).validate(arguments)
    assert call.id.startswith("call_") and call.type == "function"
    return arguments


def test_the_model_reads_tool_call_format_from_its_template(engine):
    assert engine.model.chat_config["tool_call_format"] == "hermes"


@pytest.mark.parametrize("seed", range(3))
def test_required_calls_follow_their_schemas(client, engine, seed):
    # Parallel calls may go on (with text between) until max_tokens; every finished call is checked.
    out = client.chat.completions.create(
        model=engine.model_name, messages=ASK, tools=TOOLS, tool_choice="required", seed=seed, max_tokens=150
    )
    choice = out.choices[0]
    assert choice.message.tool_calls
    for call in choice.message.tool_calls:
        _check_call(call)


def test_a_named_choice_calls_that_function_once(client, engine):
    for seed in range(3):
        out = client.chat.completions.create(
            model=engine.model_name,
            messages=ASK,
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_time"}},
            seed=seed,
            max_tokens=100,
        )
        [call] = out.choices[0].message.tool_calls
        assert call.function.name == "get_time"
        _check_call(call)


def test_without_parallel_calls_there_is_exactly_one_and_the_answer_ends_with_it(client, engine):
    for seed in range(3):
        out = client.chat.completions.create(
            model=engine.model_name,
            messages=ASK,
            tools=TOOLS,
            tool_choice="required",
            parallel_tool_calls=False,
            seed=seed,
            max_tokens=150,
        )
        assert len(out.choices[0].message.tool_calls) == 1
        assert out.choices[0].finish_reason == "tool_calls"


def test_a_round_trip_feeds_the_result_back_as_a_tool_message(client, engine):
    first = client.chat.completions.create(
        model=engine.model_name, messages=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, seed=1
    )
    message = first.choices[0].message
    history = [*ASK, message.model_dump(exclude_none=True)]
    history += [{"role": "tool", "tool_call_id": c.id, "content": '{"temperature": 21}'} for c in message.tool_calls]
    second = client.chat.completions.create(
        model=engine.model_name, messages=history, tools=TOOLS, tool_choice="none", max_tokens=8, seed=1
    )
    assert second.choices[0].finish_reason in ("stop", "length")
    assert second.choices[0].message.tool_calls is None
    # The template saw the earlier call and its result: the second prompt holds both.
    rendered = engine.template.render([{**m, "content": m.get("content") or ""} for m in _parsed(history)], tools=TOOLS)
    assert '<tool_response>\n{"temperature": 21}' in rendered
    assert f'"name": "{message.tool_calls[0].function.name}"' in rendered


def _parsed(history: list[dict]) -> list[dict]:
    from webbuild.engine.request import parse_chat_request

    return parse_chat_request({"messages": history}).messages


def test_streamed_calls_come_as_name_then_arguments_deltas(client, engine):
    stream = client.chat.completions.create(
        model=engine.model_name,
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
        seed=0,
        stream=True,
        parallel_tool_calls=False,
    )
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or ():
                if delta.index not in calls:  # the first delta of a call names it
                    assert delta.id and delta.function.name and delta.type == "function"
                    calls[delta.index] = {"name": delta.function.name, "arguments": ""}
                else:
                    assert delta.id is None
                calls[delta.index]["arguments"] += delta.function.arguments or ""
    assert finish == "tool_calls"
    assert calls and sorted(calls) == list(range(len(calls)))
    for call in calls.values():
        jsonschema_rs.validator_for(SCHEMAS[call["name"]]).validate(json.loads(call["arguments"]))


def test_tool_fields_are_checked(client, engine):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=engine.model_name,
            messages=ASK,
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    assert caught.value.body["param"] == "tool_choice"
    bad = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": 3}}}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=engine.model_name, messages=ASK, tools=bad, tool_choice="required")
    assert caught.value.body["param"] == "tools"
