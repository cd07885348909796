"""The OpenAPI 3.1 description of the REST API, served at /openapi.json.

The request schemas are written from the field declarations the parser checks against
(``webbuild.engine.request``: types, ranges, defaults, the values this engine supports, no unknown fields),
so clients and fuzzers (schemathesis) learn the real contract. The response schemas are written here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from webbuild.engine.request import (
    CHAT_FIELDS,
    COMPLETION_FIELDS,
    MAX_SAFE_INTEGER,
    MESSAGE,
    RESPONSE_FORMAT,
    TOOL,
    TOOL_CALL,
    Field,
)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def field_schema(spec: Field, default: Any = None) -> dict[str, Any]:
    """The JSON Schema of one declared value (a reference for a named one); ``default`` overrides the declared
    default."""
    return _ref(spec.name) if spec.name else _inline(spec, default)


def _inline(spec: Field, default: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = (
        {"anyOf": [field_schema(o) for o in spec.options]} if spec.type == "any_of" else {"type": spec.type}
    )
    if len(spec.enum) == 1:
        out["const"] = spec.enum[0]
    elif spec.enum:
        out["enum"] = list(spec.enum)
    if spec.type == "integer" and not spec.enum:  # every integer is one JavaScript's doubles hold exactly
        out["minimum"] = -MAX_SAFE_INTEGER if spec.minimum is None else spec.minimum
        out["maximum"] = MAX_SAFE_INTEGER if spec.maximum is None else spec.maximum
    else:
        out |= {k: v for k, v in (("minimum", spec.minimum), ("maximum", spec.maximum)) if v is not None}
    if spec.items is not None:
        out["items"] = field_schema(spec.items)
    out |= {k: v for k, v in (("minItems", spec.min_items), ("maxItems", spec.max_items)) if v is not None}
    if spec.properties:
        out |= _object(spec.properties)
    if spec.keys is not None:
        out["propertyNames"] = {"pattern": spec.keys}
    if spec.values is not None:
        out["additionalProperties"] = field_schema(spec.values)
    if spec.description:
        out["description"] = spec.description
    default = spec.default if default is None else default
    if default is not None:
        out["default"] = default
    return out


def _object(fields: Mapping[str, Field], defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``properties`` and ``required`` of an object; a field that is not required may be null (absent)."""
    defaults = defaults or {}
    properties = {}
    for name, spec in fields.items():
        schema = field_schema(spec, defaults.get(name))
        properties[name] = schema if spec.required or spec.type == "null" else _nullable(schema)
    required = [name for name, spec in fields.items() if spec.required]
    return {"properties": properties, "required": required} if required else {"properties": properties}


def request_schema(fields: Mapping[str, Field], defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A request body: the declared fields and no others; ``defaults`` are the served model's."""
    return {"type": "object", "additionalProperties": False, **_object(fields, defaults)}


_USAGE = {
    "type": "object",
    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
    "properties": {
        "prompt_tokens": {"type": "integer"},
        "completion_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"},
        "prompt_tokens_details": {
            "type": "object",
            "properties": {
                "cached_tokens": {
                    "type": "integer",
                    "description": "Prompt tokens whose KV came from the prefix cache instead of being prefilled.",
                }
            },
        },
        "extra": {"type": "object"},
    },
}
_FINISH = _nullable({"enum": ["stop", "length", "tool_calls", "abort"]})
_TOKEN = {
    "token": {"type": "string", "description": "The token decoded alone."},
    "logprob": {"type": "number", "description": "Natural log, before temperature and top_p."},
    "bytes": {"type": "array", "items": {"type": "integer"}, "description": "UTF-8 bytes of token."},
}
_CHAT_LOGPROBS = _nullable(
    {
        "type": "object",
        "required": ["content"],
        "properties": {
            "content": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": [*_TOKEN, "top_logprobs"],
                    "properties": {
                        **_TOKEN,
                        "top_logprobs": {
                            "type": "array",
                            "items": {"type": "object", "required": list(_TOKEN), "properties": _TOKEN},
                        },
                    },
                },
            }
        },
    }
)
_TEXT_LOGPROBS = _nullable(
    {
        "type": "object",
        "required": ["tokens", "token_logprobs", "top_logprobs", "text_offset"],
        "properties": {
            "tokens": {"type": "array", "items": {"type": "string"}},
            "token_logprobs": {"type": "array", "items": {"type": "number"}},
            "top_logprobs": {"type": "array", "items": {"type": "object", "additionalProperties": {"type": "number"}}},
            "text_offset": {"type": "array", "items": {"type": "integer"}},
        },
    }
)


def _completion_object(obj: str, choice: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": obj},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": choice},
            "usage": _USAGE,
        },
    }


_CHAT_COMPLETION = _completion_object(
    "chat.completion",
    {
        "type": "object",
        "required": ["index", "message", "finish_reason"],
        "properties": {
            "index": {"type": "integer"},
            "message": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": {"const": "assistant"},
                    "content": _nullable({"type": "string"}),
                    "tool_calls": {"type": "array", "items": _ref("ToolCall")},
                },
            },
            "logprobs": _CHAT_LOGPROBS,
            "finish_reason": _FINISH,
        },
    },
)
_TEXT_COMPLETION = _completion_object(
    "text_completion",
    {
        "type": "object",
        "required": ["index", "text", "finish_reason"],
        "properties": {
            "index": {"type": "integer"},
            "text": {"type": "string"},
            "logprobs": _TEXT_LOGPROBS,
            "finish_reason": _FINISH,
        },
    },
)
# One server-sent event (OpenAPI 3.1 describes each event of a stream): its data is a chunk JSON object,
# an error envelope after the stream started, or the final "[DONE]".
_SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
}
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": _nullable({"type": "string"}),
                "code": _nullable({"type": "string"}),
            },
        }
    },
}
_MODEL = {
    "type": "object",
    "required": ["id", "object", "created", "owned_by"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "model"},
        "created": {"type": "integer"},
        "owned_by": {"type": "string"},
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR_TEXT = {
    400: "Invalid request (malformed JSON, wrong type, value out of range, prompt too long).",
    401: "Missing or wrong bearer token (when the server has an API key).",
    404: "Unknown model.",
    413: "Request body larger than the model's context window can hold.",
    415: "The body is not sent as Content-Type: application/json.",
    503: "The engine is still loading (with Retry-After) or failed to load (code model_load_failed).",
}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): _json(_ref("Error"), _ERROR_TEXT[s]) for s in statuses}


def _generate(request: str, response: str, summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": [{}, {"bearer": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(request)}}},
            "responses": {
                "200": {
                    "description": "The completion; with stream: true, server-sent events of chunks.",
                    "content": {
                        "application/json": {"schema": _ref(response)},
                        "text/event-stream": {"schema": _SSE_EVENT},
                    },
                },
                **_errors(400, 401, 404, 413, 415, 503),
            },
        }
    }


def openapi_spec(version: str = "0.1.0", defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The spec as a JSON-ready dict; ``defaults`` are the served model's sampling defaults."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "webbuild REST API",
            "version": version,
            "description": "OpenAI-compatible chat and text completions on webbuild's CPU/CUDA engine.",
        },
        "paths": {
            "/v1/models": {
                "get": {
                    "summary": "The served model.",
                    "security": [{}, {"bearer": []}],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["object", "data"],
                                "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _MODEL}},
                            },
                            "Model list.",
                        ),
                        **_errors(401, 503),
                    },
                }
            },
            "/v1/models/{model}": {
                "get": {
                    "summary": "One model by id.",
                    "security": [{}, {"bearer": []}],
                    "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {"200": _json(_MODEL, "The model."), **_errors(401, 404, 503)},
                }
            },
            "/v1/chat/completions": _generate("ChatCompletionRequest", "ChatCompletion", "Chat completion."),
            "/v1/completions": _generate("CompletionRequest", "TextCompletion", "Text completion."),
            "/health": {
                "get": {
                    "summary": "Readiness: the server and its engine are up.",
                    "responses": {
                        "200": _json(
                            {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
                            "Up.",
                        ),
                        "503": _json(
                            {
                                "type": "object",
                                "required": ["status"],
                                "properties": {"status": {"enum": ["loading", "error"]}, "message": {"type": "string"}},
                            },
                            "The engine is still loading, or failed to load (message says why).",
                        ),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics.",
                    "responses": {
                        "200": {
                            "description": "Prometheus text exposition format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "Message": _inline(MESSAGE),
                "ToolCall": _inline(TOOL_CALL),
                "Tool": _inline(TOOL),
                "ResponseFormat": _inline(RESPONSE_FORMAT),
                "ChatCompletionRequest": request_schema(CHAT_FIELDS, defaults),
                "CompletionRequest": request_schema(COMPLETION_FIELDS, defaults),
                "ChatCompletion": _CHAT_COMPLETION,
                "TextCompletion": _TEXT_COMPLETION,
                "Error": _ERROR,
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
