"""The OpenAI request contract shared by the Python engine, the REST server and (in JavaScript) the browser.

Every field is declared once below as data (type, range, default, accepted values): the parser checks
requests against the declaration and serve/openapi.py writes /openapi.json from it. ``check_model_limits``
adds the rules that need the model and the tokenized prompt. web_runtime/src/openai.js applies the same rules;
web_runtime/test/fixtures/request_cases.json holds the cases both sides must pass.
"""

from __future__ import annotations

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
        "tool_calls": Field("null", "Tool calls are not supported yet."),
    },
    name="Message",
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
    "tools": Field("array", "Tool calls are not supported yet.", max_items=0),
    "tool_choice": Field("string", enum=("none", "auto")),
    "parallel_tool_calls": Field("boolean", "Accepted; it means nothing without tools."),
    "response_format": Field("object", properties={"type": Field("string", required=True, enum=("text",))}),
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
    messages: list[dict[str, str]] | None = None
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


def _messages(messages: Any) -> list[dict[str, str]]:
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
        if msg.get("tool_calls") is not None:
            raise _unsupported(f"{param}.tool_calls", "Tool calls are not supported yet.")
        parsed = {"role": ROLE_ALIASES.get(role, role), "content": _content(msg.get("content"), role, param)}
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
    tools, most_tools = req.get("tools"), CHAT_FIELDS["tools"].max_items or 0
    if tools is not None and not (isinstance(tools, list) and len(tools) <= most_tools):
        raise _unsupported("tools", "Tool calls are not supported by this engine yet.")
    if not _supported(req.get("tool_choice"), CHAT_FIELDS["tool_choice"]):
        raise _unsupported("tool_choice", "Tool calls are not supported by this engine yet.")
    if req.get("response_format") is not None:
        kind = _object(req["response_format"], "response_format").get("type")
        if kind not in CHAT_FIELDS["response_format"].properties["type"].enum:
            raise _unsupported("response_format", f"response_format type {kind!r} is not supported yet; use 'text'.")
    logprobs, top_logprobs = _chat_logprobs(req)
    max_tokens, max_completion = req.get("max_tokens"), req.get("max_completion_tokens")
    if max_tokens is not None and max_completion is not None and not _same(max_tokens, max_completion):
        raise _invalid("max_completion_tokens", "Give max_tokens or max_completion_tokens, not two different values.")
    max_field = "max_tokens" if max_completion is None else "max_completion_tokens"
    request = _common(req, CHAT_FIELDS, defaults or {}, max_field)
    request.messages, request.logprobs, request.top_logprobs = messages, logprobs, top_logprobs
    request.chat_template_kwargs = _template_kwargs(req.get("chat_template_kwargs"))
    return request


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
