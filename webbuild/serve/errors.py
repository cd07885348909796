"""Every HTTP error as OpenAI's envelope ``{"error": {"message", "type", "param", "code"}}``.

One renderer serves the JSON error responses (any status) and the error event of an SSE stream that has already
started, so a client parses one shape wherever it fails.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from webbuild.errors import AuthenticationError, EngineUnavailableError, RequestTooLargeError, WebbuildError

log = logging.getLogger("webbuild.serve")

# Codes for the errors starlette raises itself (routing, static files).
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",  # StaticFiles' answer to an unreadable file; a wrong key is AuthenticationError
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    416: "range_not_satisfiable",
}


def envelope(message: str, type_: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_payload(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The HTTP status and envelope for any exception; unexpected ones say only their class (details go to the log)."""
    if isinstance(exc, WebbuildError):
        return exc.status, envelope(exc.message, exc.type, exc.code, exc.param)
    if isinstance(exc, HTTPException):
        status = exc.status_code
        phrase = _phrase(status)
        detail = exc.detail if exc.detail and exc.detail != phrase else _default_message(status)
        type_ = "server_error" if status >= 500 else "invalid_request_error"
        return status, envelope(detail, type_, _HTTP_CODES.get(status, phrase.lower().replace(" ", "_")))
    return 500, envelope(f"Internal server error ({type(exc).__name__}).", "server_error", "internal_error")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _default_message(status: int) -> str:
    return {404: "Not found.", 405: "Method not allowed."}.get(status, f"{_phrase(status)}.")


async def error_response(request: Request, exc: Exception) -> Response:
    """The exception handler registered for everything, so no error leaves the server in another shape."""
    status, body = error_payload(exc)
    allow = exc.headers.get("Allow") if isinstance(exc, HTTPException) and exc.headers else None
    if status == 405 and allow:
        body["error"]["message"] = f"{request.method} is not allowed on {request.url.path}; use {allow}."
    # Other exceptions reach the server's log through starlette. An engine still loading is no failure, and a
    # failed load was reported once, when it happened.
    if status >= 500 and isinstance(exc, WebbuildError | HTTPException) and not isinstance(exc, EngineUnavailableError):
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    if isinstance(exc, AuthenticationError):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, EngineUnavailableError) and exc.retry_after:
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, RequestTooLargeError):  # the rest of the body may still be coming: end the connection
        headers["Connection"] = "close"
    if status in (204, 304):  # bodyless statuses (static files may raise them)
        return Response(status_code=status, headers=headers)
    return JSONResponse(body, status_code=status, headers=headers)
