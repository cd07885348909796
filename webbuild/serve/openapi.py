"""The OpenAPI 3.1 description of the REST API, served at /openapi.json.

Written by hand to say what ``openai_api.parse_*`` accepts (ranges, the values this engine supports, no
unknown fields), so clients and fuzzers (schemathesis) learn the real contract; tests keep the two in step.
"""

from __future__ import annotations

from typing import Any

from webbuild.engine.request import MAX_CHOICES, MAX_TOP_LOGPROBS, ROLES

_MAX_SAFE_INTEGER = 2**53 - 1


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _number(lo: float, hi: float, description: str) -> dict[str, Any]:
    return _nullable({"type": "number", "minimum": lo, "maximum": hi, "description": description})


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_COMMON_FIELDS: dict[str, Any] = {
    "model": _nullable({"type": "string", "description": "Must be the served model's id (GET /v1/models)."}),
    "frequency_penalty": _number(-2, 2, "Penalty growing with how often a token already appeared."),
    "presence_penalty": _number(-2, 2, "Penalty for tokens that already appeared."),
    "logit_bias": _nullable(
        {
            "type": "object",
            "propertyNames": {"pattern": "^[0-9]+$"},
            "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100},
            "description": "Token id (below the vocabulary size) -> bias added to its logit.",
        }
    ),
    "max_tokens": _nullable({"type": "integer", "minimum": 1, "maximum": _MAX_SAFE_INTEGER}),
    "n": _nullable(
        {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_CHOICES,
            "description": "Choices to generate, each an independent sample of the prompt (with a seed, choice i "
            "draws from a stream derived from the seed and i).",
        }
    ),
    "seed": _nullable({"type": "integer", "minimum": -_MAX_SAFE_INTEGER, "maximum": _MAX_SAFE_INTEGER}),
    "stop": _nullable(
        {
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}],
            "description": "Up to 4 sequences that end the output; they are not part of it.",
        }
    ),
    "stream": _nullable({"type": "boolean", "description": "Server-sent events, ending with `data: [DONE]`."}),
    "stream_options": _nullable(
        {
            "type": "object",
            "properties": {"include_usage": _nullable({"type": "boolean"})},
            "description": "Only with stream: true.",
        }
    ),
    "temperature": _number(0, 2, "0 is greedy."),
    "top_p": _number(0, 1, "Nucleus sampling mass."),
    "user": _nullable({"type": "string"}),
}

_TEXT_PART = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
}
_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"enum": list(ROLES)},
        "content": _nullable(
            {
                "anyOf": [{"type": "string"}, {"type": "array", "items": _TEXT_PART}],
                "description": "Required except for assistant messages.",
            }
        ),
        "name": {"type": "string"},
        "tool_calls": {"type": "null"},
    },
}
_CHAT_REQUEST = {
    "type": "object",
    "required": ["messages"],
    "additionalProperties": False,
    "properties": {
        "messages": {"type": "array", "minItems": 1, "items": _ref("Message")},
        **_COMMON_FIELDS,
        "max_completion_tokens": _nullable({"type": "integer", "minimum": 1, "maximum": _MAX_SAFE_INTEGER}),
        "logprobs": _nullable(
            {"type": "boolean", "description": "Log probability of every generated token of the output."}
        ),
        "top_logprobs": _nullable(
            {
                "type": "integer",
                "minimum": 0,
                "maximum": MAX_TOP_LOGPROBS["chat"],
                "description": "Most likely alternatives per token; only with logprobs: true.",
            }
        ),
        "tools": _nullable({"type": "array", "maxItems": 0}),
        "tool_choice": {"enum": ["none", "auto", None]},
        "parallel_tool_calls": _nullable({"type": "boolean"}),
        "response_format": _nullable(
            {"type": "object", "required": ["type"], "properties": {"type": {"const": "text"}}}
        ),
    },
}
_TOKEN_IDS = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}
_COMPLETION_REQUEST = {
    "type": "object",
    "required": ["prompt"],
    "additionalProperties": False,
    "properties": {
        "prompt": {
            "anyOf": [
                {"type": "string"},
                _TOKEN_IDS,
                {"type": "array", "minItems": 1, "maxItems": 1, "items": {"anyOf": [{"type": "string"}, _TOKEN_IDS]}},
            ],
            "description": "One prompt: text, or token ids below the vocabulary size.",
        },
        **_COMMON_FIELDS,
        "logprobs": _nullable(
            {
                "type": "integer",
                "minimum": 0,
                "maximum": MAX_TOP_LOGPROBS["completion"],
                "description": "Log probability of every generated token, with this many most likely alternatives.",
            }
        ),
        "echo": _nullable({"type": "boolean", "description": "Start the text with the prompt; not with logprobs."}),
        "suffix": {"enum": ["", None]},
        "best_of": {"enum": [1, None]},
    },
}

_USAGE = {
    "type": "object",
    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
    "properties": {
        "prompt_tokens": {"type": "integer"},
        "completion_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"},
        "extra": {"type": "object"},
    },
}
_FINISH = _nullable({"enum": ["stop", "length", "abort"]})
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
                "properties": {"role": {"const": "assistant"}, "content": _nullable({"type": "string"})},
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
    413: "Request body too large.",
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
                **_errors(400, 401, 404, 413),
            },
        }
    }


def openapi_spec(version: str = "0.1.0") -> dict[str, Any]:
    """The spec as a JSON-ready dict."""
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
                        **_errors(401),
                    },
                }
            },
            "/v1/models/{model}": {
                "get": {
                    "summary": "One model by id.",
                    "security": [{}, {"bearer": []}],
                    "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {"200": _json(_MODEL, "The model."), **_errors(401, 404)},
                }
            },
            "/v1/chat/completions": _generate("ChatCompletionRequest", "ChatCompletion", "Chat completion."),
            "/v1/completions": _generate("CompletionRequest", "TextCompletion", "Text completion."),
            "/health": {
                "get": {
                    "summary": "Liveness: the server and its engine are up.",
                    "responses": {
                        "200": _json(
                            {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
                            "Up.",
                        )
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
                "Message": _MESSAGE,
                "ChatCompletionRequest": _CHAT_REQUEST,
                "CompletionRequest": _COMPLETION_REQUEST,
                "ChatCompletion": _CHAT_COMPLETION,
                "TextCompletion": _TEXT_COMPLETION,
                "Error": _ERROR,
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
