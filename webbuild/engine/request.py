"""The OpenAI request contract shared by the Python engine, the REST server and (in JavaScript) the browser.

Every field is declared once below as data (type, range, default, accepted values): the parser checks
requests against the declaration and serve/openapi.py writes /openapi.json from it. ``check_model_limits``
adds the rules that need the model and the tokenized prompt. web_runtime/src/openai.js applies the same rules;
web_runtime/test/fixtures/request_cases.json holds the cases both sides must pass.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from webbuild.errors import ContextLengthExceededError, InvalidRequestError, UnsupportedParameterError

# The browser parses JSON into doubles and refuses integers past this; refusing them here keeps both sides equal.
MAX_SAFE_INTEGER = 2**53 - 1
# OpenAI's default for text completions; chat runs until a stop or the context window ends.
COMPLETION_DEFAULT_MAX_TOKENS = 16
ROLES = ("system", "developer", "user", "assistant", "tool")
# The one place roles are renamed: "developer" is OpenAI's newer "system", which chat templates know.
ROLE_ALIASES = {"developer": "system"}
# Chat template variables the engines set themselves (webbuild/engine/chat_template.py, web_runtime chat_template.js).
TEMPLATE_RESERVED = ("messages", "add_generation_prompt", "bos_token", "eos_token", "pad_token")


@dataclass(frozen=True)
class Field:
    """One value of the contract. ``type`` is a JSON Schema type, or "any_of" (one of ``options``). A
    field that is not ``required`` may also be null, which means absent; integers are also within
    ±MAX_SAFE_INTEGER. ``enum`` lists the only values this engine supports (others are unsupported, not
    invalid); ``keys``/``values`` describe an object used as a map; ``name`` publishes the value's schema as a
    named component."""

    type: str
    description: str = ""
    required: bool = False
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[Any, ...] = ()
    items: Field | None = None
    min_items: int | None = None
    max_items: int | None = None
    properties: Mapping[str, Field] = field(default_factory=dict)
    keys: str | None = None  # regular expression every key matches
    values: Field | None = None
    options: tuple[Field, ...] = ()
    name: str | None = None


_STRING = Field("string")
_STOPS = Field("array", items=_STRING, max_items=4)
_BIAS = Field("number", minimum=-100, maximum=100)
_TOKEN_ID_KEY = "^[0-9]+$"
_TOKEN_IDS = Field("array", min_items=1, items=Field("integer", minimum=0))
_TEXT_PART = Field(
    "object",
    properties={"type": Field("string", required=True, enum=("text",)), "text": Field("string", required=True)},
)
_FUNCTION_NAME = Field("string", "Letters, digits, underscores and dashes, at most 64.", required=True)
_FUNCTION_NAME_PATTERN = "^[A-Za-z0-9_-]{1,64}$"
# An assistant message's earlier call: arguments are the JSON text the model wrote (an object).
TOOL_CALL = Field(
    "object",
    properties={
        "id": Field("string", required=True),
        "type": Field("string", required=True, enum=("function",)),
        "function": Field(
            "object",
            required=True,
            properties={"name": _FUNCTION_NAME, "arguments": Field("string", "A JSON object.", required=True)},
        ),
    },
    name="ToolCall",
)
MESSAGE = Field(
    "object",
    properties={
        "role": Field("string", required=True, enum=ROLES),
        "content": Field(
            "any_of",
            "Required except for assistant messages.",
            options=(_STRING, Field("array", items=_TEXT_PART)),
        ),
        "name": _STRING,
        "tool_calls": Field("array", "Assistant messages only: the calls it made.", items=TOOL_CALL),
        "tool_call_id": Field("string", "Tool messages only (required there): the call this result answers."),
    },
    name="Message",
)
_JSON_SCHEMA = Field("object", "A JSON Schema.")
TOOL = Field(
    "object",
    properties={
        "type": Field("string", required=True, enum=("function",)),
        "function": Field(
            "object",
            required=True,
            properties={
                "name": _FUNCTION_NAME,
                "description": _STRING,
                "parameters": replace(_JSON_SCHEMA, description="The arguments' JSON Schema; absent: any object."),
                "strict": Field("boolean", "Accepted; arguments always follow parameters."),
            },
        ),
    },
    name="Tool",
)
_NAMED_TOOL_CHOICE = Field(
    "object",
    properties={
        "type": Field("string", required=True, enum=("function",)),
        "function": Field("object", required=True, properties={"name": _FUNCTION_NAME}),
    },
)
TOOL_CHOICES = ("none", "auto", "required")
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
RESPONSE_FORMAT = Field(
    "object",
    "Constrains the output: text, any JSON object, or JSON that validates against json_schema.schema.",
    properties={
        "type": Field("string", required=True, enum=RESPONSE_FORMATS),
        "json_schema": Field(
            "object",
            "Required with type json_schema.",
            properties={
                "name": Field("string", required=True),
                "description": _STRING,
                "schema": replace(_JSON_SCHEMA, description="Absent: any JSON object."),
                "strict": Field("boolean", "Accepted; the output always follows the schema."),
            },
        ),
    },
    name="ResponseFormat",
)


def _penalty(description: str) -> Field:
    return Field("number", description, default=0.0, minimum=-2, maximum=2)


_COMMON_FIELDS: dict[str, Field] = {
    "model": Field("string", "Must be the served model's id (GET /v1/models)."),
    "frequency_penalty": _penalty("Penalty growing with how often a token already appeared."),
    "presence_penalty": _penalty("Penalty for tokens that already appeared."),
    "logit_bias": Field(
        "object",
        "Token id (below the vocabulary size) -> bias added to its logit.",
        keys=_TOKEN_ID_KEY,
        values=_BIAS,
    ),
    "n": Field(
        "integer",
        "Choices to generate, each an independent sample of the prompt (with a seed, choice i draws from a "
        "stream derived from the seed and i).",
        default=1,
        minimum=1,
        maximum=16,
    ),
    "seed": Field("integer", "The same seed and request give the same output."),
    "stop": Field(
        "any_of",
        "Up to 4 sequences that end the output; they are not part of it.",
        options=(_STRING, _STOPS),
    ),
    "stream": Field("boolean", "Server-sent events, ending with `data: [DONE]`.", default=False),
    "stream_options": Field(
        "object", "Only with stream: true.", properties={"include_usage": Field("boolean", default=False)}
    ),
    "temperature": Field("number", "0 is greedy.", default=1.0, minimum=0, maximum=2),
    "top_p": Field("number", "Nucleus sampling mass.", default=1.0, minimum=0, maximum=1),
    "user": Field("string", "Accepted; it only labels the request."),
}
_CHAT_MAX_TOKENS = Field(
    "integer",
    "Most tokens to generate; the prompt plus this must fit the context window. Default: the rest of the window.",
    minimum=1,
)
CHAT_FIELDS: dict[str, Field] = {
    "messages": Field("array", required=True, min_items=1, items=MESSAGE),
    **_COMMON_FIELDS,
    "max_tokens": _CHAT_MAX_TOKENS,
    "max_completion_tokens": replace(_CHAT_MAX_TOKENS, description="The same as max_tokens."),
    "logprobs": Field("boolean", "Log probability of every generated token of the output.", default=False),
    "top_logprobs": Field(
        "integer", "Most likely alternatives per token; only with logprobs: true.", default=0, minimum=0, maximum=20
    ),
    "tools": Field(
        "array",
        "Functions the model may call, shown to it by its chat template; its calls come back as tool_calls.",
        items=TOOL,
        max_items=128,
    ),
    "tool_choice": Field(
        "any_of",
        "none: no calls; auto (the default with tools): the model decides; required: at least one call; a named "
        "function: exactly that call. Calls follow their parameters' schema.",
        options=(Field("string", enum=TOOL_CHOICES), _NAMED_TOOL_CHOICE),
    ),
    "parallel_tool_calls": Field("boolean", "false: at most one call per answer.", default=True),
    "response_format": RESPONSE_FORMAT,
    "chat_template_kwargs": Field(
        "object",
        'Extra variables for the model\'s chat template, e.g. {"enable_thinking": false} for Qwen3.',
        keys=r".+",
        values=Field("any_of", options=(Field("string"), Field("number"), Field("boolean"))),
    ),
}
COMPLETION_FIELDS: dict[str, Field] = {
    "prompt": Field(
        "any_of",
        "One prompt: text, or token ids below the vocabulary size.",
        required=True,
        options=(
            _STRING,
            _TOKEN_IDS,
            Field("array", min_items=1, max_items=1, items=Field("any_of", options=(_STRING, _TOKEN_IDS))),
        ),
    ),
    **_COMMON_FIELDS,
    "max_tokens": replace(
        _CHAT_MAX_TOKENS,
        description="Most tokens to generate; the prompt plus this must fit the context window. Default: 16, "
        "or the rest of the window if less.",
        default=COMPLETION_DEFAULT_MAX_TOKENS,
    ),
    # OpenAI's legacy API: the number of alternatives per token (chat's top_logprobs).
    "logprobs": Field(
        "integer",
        "Log probability of every generated token, with this many most likely alternatives.",
        minimum=0,
        maximum=5,
    ),
    "echo": Field("boolean", "Start the text with the prompt; not with logprobs.", default=False),
    "suffix": Field("string", enum=("",)),
    "best_of": Field("integer", enum=(1,)),
}


@dataclass
class SamplingParams:
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    # Applied by both engines to generated tokens (webbuild/engine/sampling.py, web_runtime/src/sampler.js).
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] | None = None


@dataclass
class Request:
    """A parsed chat or text completion request; exactly one of ``messages``/``prompt`` is set."""

    sampling: SamplingParams
    messages: list[dict[str, Any]] | None = None
    prompt: str | list[int] | None = None  # text, or token ids
    model: str | None = None
    stream: bool = False
    include_usage: bool = False
    echo: bool = False  # completions only: the prompt's text starts every choice
    n: int = 1  # choices, each an independent sample of the prompt
    logprobs: bool = False  # a log probability for every generated token of the output
    top_logprobs: int = 0  # and this many most likely alternatives for each
    max_tokens_given: bool = False  # False: sampling.max_tokens is the endpoint's default, fitted to the window
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)  # chat only: extra template variables
    # chat only: {"type": "json_object"} or {"type": "json_schema", "schema": {...}}; None for text
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)  # as given: {"type": "function", "function": {...}}
    tool_choice: str = "auto"  # none | auto | required | function (the one named by ``tool_name``)
    tool_name: str | None = None
    parallel_tool_calls: bool = True


def _invalid(param: str | None, message: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def _unsupported(param: str, message: str) -> UnsupportedParameterError:
    return UnsupportedParameterError(message, param=param)


def _same(a: Any, b: Any) -> bool:
    """JavaScript's ``===`` on JSON scalars: unlike Python, ``True`` is not ``1``."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _supported(value: Any, spec: Field) -> bool:
    return value is None or any(_same(value, v) for v in spec.enum)


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and (
        isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    )


def _is_integer(value: Any) -> bool:
    """JSON ``2.0`` is the integer 2 to the browser, so it is here too."""
    return _is_number(value) and (isinstance(value, int) or value.is_integer())


def _object(value: Any, param: str | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(param, f"{param or 'The request body'} must be a JSON object.")
    return value


def _in_range(value: float, param: str, spec: Field) -> None:
    lo, hi = spec.minimum, spec.maximum
    if (lo is None or value >= lo) and (hi is None or value <= hi):
        return
    if lo is not None and hi is not None:
        bounds = f"between {lo} and {hi}"
    else:
        bounds = f"at least {lo}" if lo is not None else f"at most {hi}"
    raise _invalid(param, f"{param} must be {bounds}, got {value}.")


# JSON Schema type of a scalar -> (its check, its name in messages)
_SCALARS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "string": (lambda v: isinstance(v, str), "a string"),
    "boolean": (lambda v: isinstance(v, bool), "a boolean"),
    "number": (_is_number, "a number"),
    "integer": (lambda v: _is_integer(v) and abs(v) <= MAX_SAFE_INTEGER, "an integer"),
}


def _scalar(value: Any, param: str, spec: Field) -> Any:
    """A string, boolean, number or integer checked against its declaration; absent (None) gives its default."""
    if value is None:
        return spec.default
    check, kind = _SCALARS[spec.type]
    if not check(value):
        raise _invalid(param, f"{param} must be {kind}.")
    if spec.type in ("number", "integer"):
        _in_range(value, param, spec)
        return int(value) if spec.type == "integer" else float(value)
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def _well_formed(body: Any) -> None:
    """Refuses a lone UTF-16 surrogate anywhere in the body. JSON may write one (``"\\ud800"``) and Python
    decodes it into a str that no UTF-8 encoder takes, so the tokenizer would fail on it; a proper pair
    arrives here as one code point. Iterative: a body nested as deep as the JSON parser allows is walked too."""
    stack: list[tuple[Any, str | None]] = [(body, None)]
    while stack:
        value, param = stack.pop()
        if isinstance(value, str) and _SURROGATE.search(value):
            where = param or "The request body"
            raise _invalid(param, f"{where} is not valid Unicode: it contains a lone UTF-16 surrogate.")
        if isinstance(value, dict):
            items = [(key, param) for key in value] + [
                (item, f"{param}.{key}" if param else key) for key, item in value.items()
            ]
        elif isinstance(value, list):
            items = [(item, f"{param}[{i}]") for i, item in enumerate(value)]
        else:
            continue
        stack.extend(reversed(items))  # first in the body is checked first, as the browser does


def _check_fields(req: dict[str, Any], allowed: Mapping[str, Field]) -> None:
    for key in req:
        if key not in allowed:
            raise _invalid(key, f"Unrecognized request argument supplied: {key}")


def _content(content: Any, role: str, param: str) -> str:
    if content is None:
        if role != "assistant":
            raise _invalid(f"{param}.content", f"{param}.content is required.")
        return ""
    if isinstance(content, list):  # OpenAI content parts; only text ones exist for a text model
        for j, part in enumerate(content):
            part = _object(part, f"{param}.content[{j}]")
            if part.get("type") not in _TEXT_PART.properties["type"].enum:
                raise _unsupported(
                    f"{param}.content[{j}].type", f"Content parts of type {part.get('type')!r} are not supported."
                )
            if not isinstance(part.get("text"), str):
                raise _invalid(f"{param}.content[{j}].text", "A text part needs a text string.")
        return "".join(part["text"] for part in content)
    if not isinstance(content, str):
        raise _invalid(f"{param}.content", f"{param}.content must be a string or an array of text parts.")
    return content


def _function_name(value: Any, param: str) -> str:
    if not (isinstance(value, str) and re.fullmatch(_FUNCTION_NAME_PATTERN, value)):
        raise _invalid(param, f"{param} must be 1 to 64 letters, digits, underscores or dashes.")
    return value


def _json_schema(value: Any, param: str) -> dict[str, Any] | None:
    """A schema is checked only for being an object here; whether it is one the grammar compiler takes is the
    engine's check (a 400 with the same param)."""
    return None if value is None else _object(value, param)


def _tool_calls(calls: Any, param: str) -> list[dict[str, Any]]:
    """An assistant message's calls, with arguments parsed: chat templates write them with ``tojson``."""
    if not isinstance(calls, list):
        raise _invalid(param, f"{param} must be an array.")
    out = []
    for j, call in enumerate(calls):
        where = f"{param}[{j}]"
        call = _object(call, where)
        if not isinstance(call.get("id"), str):
            raise _invalid(f"{where}.id", f"{where}.id must be a string.")
        if call.get("type") != "function":
            raise _unsupported(f"{where}.type", f"{where}.type must be 'function'.")
        function = _object(call.get("function"), f"{where}.function")
        name = _function_name(function.get("name"), f"{where}.function.name")
        arguments = function.get("arguments")
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else None
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise _invalid(f"{where}.function.arguments", f"{where}.function.arguments must be a JSON object text.")
        out.append({"id": call["id"], "type": "function", "function": {"name": name, "arguments": parsed}})
    return out


def _messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages", "messages must be a non-empty array.")
    roles = MESSAGE.properties["role"].enum
    out = []
    for i, m in enumerate(messages):
        param = f"messages[{i}]"
        msg = _object(m, param)
        role = msg.get("role")
        if role not in roles:
            raise _invalid(f"{param}.role", f"{param}.role must be one of {', '.join(roles)}.")
        parsed: dict[str, Any] = {"role": ROLE_ALIASES.get(role, role)}
        if msg.get("tool_calls") is not None:
            if role != "assistant":
                raise _invalid(f"{param}.tool_calls", "Only assistant messages have tool_calls.")
            parsed["tool_calls"] = _tool_calls(msg["tool_calls"], f"{param}.tool_calls")
        parsed["content"] = _content(msg.get("content"), role, param)
        if role == "tool":
            if not isinstance(msg.get("tool_call_id"), str):
                raise _invalid(f"{param}.tool_call_id", f"{param}.tool_call_id is required for a tool message.")
            parsed["tool_call_id"] = msg["tool_call_id"]
        if isinstance(msg.get("name"), str):
            parsed["name"] = msg["name"]
        out.append(parsed)
    return out


def _prompt(prompt: Any) -> str | list[int]:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(_is_integer(t) and t >= 0 for t in prompt):
        return [int(t) for t in prompt]
    if isinstance(prompt, list) and len(prompt) > 1 and all(isinstance(p, str | list) for p in prompt):
        raise _unsupported("prompt", "Only one prompt per request is supported.")
    raise _invalid("prompt", "prompt must be a string or a non-empty array of token ids.")


def _stop(stop: Any) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise _invalid("stop", "stop must be a string or an array of strings.")
    if len(stops) > (_STOPS.max_items or 0):
        raise _invalid("stop", f"stop takes at most {_STOPS.max_items} sequences.")
    return [s for s in stops if s]


def _logit_bias(bias: Any) -> dict[int, float] | None:
    if bias is None:
        return None
    out = {}
    for key, value in _object(bias, "logit_bias").items():
        if not re.fullmatch(_TOKEN_ID_KEY, key):
            raise _invalid("logit_bias", f"logit_bias keys must be token ids, got {key!r}.")
        out[int(key)] = _scalar(value, f"logit_bias.{key}", _BIAS)
    return out


def _chat_logprobs(req: dict[str, Any]) -> tuple[bool, int]:
    """(logprobs, top_logprobs): ``logprobs: true`` plus ``top_logprobs``."""
    logprobs = _scalar(req.get("logprobs"), "logprobs", CHAT_FIELDS["logprobs"])
    if req.get("top_logprobs") is None:
        return logprobs, 0
    if not logprobs:
        raise _invalid("top_logprobs", "top_logprobs is only allowed with logprobs: true.")
    return True, _scalar(req["top_logprobs"], "top_logprobs", CHAT_FIELDS["top_logprobs"])


def _common(req: dict[str, Any], fields: Mapping[str, Field], defaults: dict[str, Any], max_field: str) -> Request:
    """The fields chat and text completions share, checked in the browser's order so both report one error."""

    def get(name: str) -> Any:
        return _scalar(req.get(name), name, fields[name])

    def sampling_number(name: str) -> float:  # the model's defaults come before the declared ones
        value = req.get(name)
        return _scalar(defaults.get(name) if value is None else value, name, fields[name])

    model = get("model")
    get("user")
    n = get("n")
    stream = get("stream")
    include_usage = False
    if req.get("stream_options") is not None:
        if not stream:
            raise _invalid("stream_options", "stream_options is only allowed when stream is true.")
        options = _object(req["stream_options"], "stream_options")
        spec = fields["stream_options"].properties["include_usage"]
        include_usage = _scalar(options.get("include_usage"), "stream_options.include_usage", spec)
    sampling = SamplingParams(
        max_tokens=_scalar(req.get(max_field), max_field, fields[max_field]),
        temperature=sampling_number("temperature"),
        top_p=sampling_number("top_p"),
        presence_penalty=sampling_number("presence_penalty"),
        frequency_penalty=sampling_number("frequency_penalty"),
        logit_bias=_logit_bias(req.get("logit_bias")),
        stop=_stop(req.get("stop")),
        seed=get("seed"),
    )
    return Request(
        sampling=sampling,
        model=model,
        stream=stream,
        include_usage=include_usage,
        n=n,
        max_tokens_given=req.get(max_field) is not None,
    )


def parse_chat_request(body: Any, defaults: dict[str, Any] | None = None) -> Request:
    """Validates a chat completion body; ``defaults`` (the model's temperature/top_p...) fill absent fields."""
    req = _object(body)
    _well_formed(req)
    _check_fields(req, CHAT_FIELDS)
    messages = _messages(req.get("messages"))
    tools = _tools(req.get("tools"))
    tool_choice, tool_name = _tool_choice(req.get("tool_choice"), tools)
    parallel = _scalar(req.get("parallel_tool_calls"), "parallel_tool_calls", CHAT_FIELDS["parallel_tool_calls"])
    response_format = _response_format(req.get("response_format"))
    if response_format is not None and tools and tool_choice != "none":
        raise _unsupported(
            "response_format",
            "response_format json_object/json_schema together with tools is not "
            "supported; drop one, or set tool_choice to none.",
        )
    logprobs, top_logprobs = _chat_logprobs(req)
    max_tokens, max_completion = req.get("max_tokens"), req.get("max_completion_tokens")
    if max_tokens is not None and max_completion is not None and not _same(max_tokens, max_completion):
        raise _invalid("max_completion_tokens", "Give max_tokens or max_completion_tokens, not two different values.")
    max_field = "max_tokens" if max_completion is None else "max_completion_tokens"
    request = _common(req, CHAT_FIELDS, defaults or {}, max_field)
    request.messages, request.logprobs, request.top_logprobs = messages, logprobs, top_logprobs
    request.chat_template_kwargs = _template_kwargs(req.get("chat_template_kwargs"))
    request.response_format, request.tools = response_format, tools
    request.tool_choice, request.tool_name, request.parallel_tool_calls = tool_choice, tool_name, parallel
    return request


def _tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    most = CHAT_FIELDS["tools"].max_items or 0
    if not isinstance(tools, list) or len(tools) > most:
        raise _invalid("tools", f"tools must be an array of at most {most} tools.")
    names: set[str] = set()
    out = []
    for i, tool in enumerate(tools):
        param = f"tools[{i}]"
        tool = _object(tool, param)
        if tool.get("type") != "function":
            raise _unsupported(
                f"{param}.type", f"Tools of type {tool.get('type')!r} are not supported; use 'function'."
            )
        function = _object(tool.get("function"), f"{param}.function")
        name = _function_name(function.get("name"), f"{param}.function.name")
        if name in names:
            raise _invalid(f"{param}.function.name", f"Two tools are named {name!r}.")
        names.add(name)
        if function.get("description") is not None and not isinstance(function["description"], str):
            raise _invalid(f"{param}.function.description", f"{param}.function.description must be a string.")
        _json_schema(function.get("parameters"), f"{param}.function.parameters")
        spec = TOOL.properties["function"].properties["strict"]
        _scalar(function.get("strict"), f"{param}.function.strict", spec)
        out.append({"type": "function", "function": {k: v for k, v in function.items() if v is not None}})
    return out


def _tool_choice(choice: Any, tools: list[dict[str, Any]]) -> tuple[str, str | None]:
    """(none | auto | required | function, the forced function's name)."""
    if choice is None:
        return "auto", None
    if isinstance(choice, str):
        if choice not in TOOL_CHOICES:
            raise _invalid("tool_choice", f"tool_choice must be one of {', '.join(TOOL_CHOICES)} or a named function.")
        if choice == "required" and not tools:
            raise _invalid("tool_choice", "tool_choice required needs tools.")
        return choice, None
    choice = _object(choice, "tool_choice")
    if choice.get("type") != "function":
        raise _invalid("tool_choice.type", "tool_choice.type must be 'function'.")
    name = _function_name(
        _object(choice.get("function"), "tool_choice.function").get("name"), "tool_choice.function.name"
    )
    if name not in {t["function"]["name"] for t in tools}:
        raise _invalid("tool_choice", f"tool_choice names {name!r}, which is not one of the tools.")
    return "function", name


def _response_format(fmt: Any) -> dict[str, Any] | None:
    if fmt is None:
        return None
    fmt = _object(fmt, "response_format")
    kind = fmt.get("type")
    if not isinstance(kind, str):
        raise _invalid("response_format", "response_format.type is required.")
    if kind not in RESPONSE_FORMATS:
        raise _unsupported(
            "response_format",
            f"response_format type {kind!r} is not supported; use one of {', '.join(RESPONSE_FORMATS)}.",
        )
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": kind}
    spec = _object(fmt.get("json_schema"), "response_format.json_schema")
    if not isinstance(spec.get("name"), str) or not spec["name"]:
        raise _invalid("response_format.json_schema.name", "response_format.json_schema.name is required.")
    strict = RESPONSE_FORMAT.properties["json_schema"].properties["strict"]
    _scalar(spec.get("strict"), "response_format.json_schema.strict", strict)
    return {"type": kind, "schema": _json_schema(spec.get("schema"), "response_format.json_schema.schema")}


def _template_kwargs(kwargs: Any) -> dict[str, Any]:
    """Variables a chat template may read (``enable_thinking``); never the ones the engine itself passes."""
    if kwargs is None:
        return {}
    kwargs = _object(kwargs, "chat_template_kwargs")
    for key, value in kwargs.items():
        if key in TEMPLATE_RESERVED:
            raise _invalid("chat_template_kwargs", f"chat_template_kwargs cannot set {key}; it is set by the engine.")
        if isinstance(value, dict | list) or value is None:
            raise _invalid("chat_template_kwargs", f"chat_template_kwargs.{key} must be a string, number or boolean.")
    return dict(kwargs)


def parse_completion_request(body: Any, defaults: dict[str, Any] | None = None) -> Request:
    """Validates a text completion body; ``prompt`` is one string or one list of token ids."""
    req = _object(body)
    _well_formed(req)
    _check_fields(req, COMPLETION_FIELDS)
    prompt = _prompt(req.get("prompt"))
    if not _supported(req.get("suffix"), COMPLETION_FIELDS["suffix"]):
        raise _unsupported("suffix", "suffix (insertion) is not supported.")
    if not _supported(req.get("best_of"), COMPLETION_FIELDS["best_of"]):
        raise _unsupported("best_of", "best_of must be 1.")
    echo = _scalar(req.get("echo"), "echo", COMPLETION_FIELDS["echo"])
    top_logprobs = _scalar(req.get("logprobs"), "logprobs", COMPLETION_FIELDS["logprobs"])
    request = _common(req, COMPLETION_FIELDS, defaults or {}, "max_tokens")
    request.prompt, request.echo = prompt, echo
    request.logprobs, request.top_logprobs = top_logprobs is not None, top_logprobs or 0
    if request.echo and request.logprobs:
        raise _unsupported(
            "echo", "echo together with logprobs (log probabilities of the prompt) is not supported; drop one of them."
        )
    return request


def check_model_limits(request: Request, prompt_tokens: int, *, context_window_size: int, vocab_size: int) -> Request:
    """The rules that need the model and the tokenized prompt; every engine surface applies them after
    tokenizing, so the Python API, REST and chat refuse the same requests (web_runtime/openai.js too).

    The prompt must leave room in the context window; a given ``max_tokens`` must fit beside it (never
    shortened, as OpenAI refuses it too); an omitted one is the rest of the window for chat and at most 16
    for completions; ``logit_bias`` ids must be in the vocabulary. Returns the request with
    ``sampling.max_tokens`` set to the most tokens to generate.
    """
    window = context_window_size
    if prompt_tokens >= window:
        raise ContextLengthExceededError(
            f"The prompt has {prompt_tokens} tokens; this model's context window is {window} tokens, which leaves "
            "none to generate. Shorten the prompt.",
            param="messages" if request.messages is not None else "prompt",
        )
    room, max_tokens = window - prompt_tokens, request.sampling.max_tokens
    if request.max_tokens_given and max_tokens is not None and max_tokens > room:
        raise ContextLengthExceededError(
            f"The prompt has {prompt_tokens} tokens and max_tokens is {max_tokens}: {prompt_tokens + max_tokens} in "
            f"all, past this model's context window of {window} tokens. Ask for at most {room}.",
            param="max_tokens",
        )
    if not request.max_tokens_given:
        max_tokens = room if max_tokens is None else min(max_tokens, room)
    bad = next((t for t in request.sampling.logit_bias or () if t >= vocab_size), None)
    if bad is not None:
        raise InvalidRequestError(
            f"logit_bias has token id {bad}; this model's vocabulary has {vocab_size} tokens (0 to {vocab_size - 1}).",
            param="logit_bias",
        )
    return replace(request, sampling=replace(request.sampling, max_tokens=max_tokens))
