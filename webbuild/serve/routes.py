"""The OpenAI-compatible REST API on a webbuild engine: /v1 routes, /health, /metrics, /openapi.json.

The engine blocks, so every call into it runs in a worker thread and the event loop stays free for other
requests. A streamed response pulls one chunk per thread hop and closes the engine's iterator however it
ends (done, error, client gone), which aborts the request and frees its KV cache pages. A non-streamed one
waits for the engine while listening for the client's disconnect, which aborts the request the same way.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from typing import Any, Protocol

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from webbuild.engine.request import Request as ApiRequest
from webbuild.engine.request import parse_chat_request, parse_completion_request
from webbuild.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    RequestTooLargeError,
    UnsupportedMediaTypeError,
)
from webbuild.serve.auth import BearerAuth
from webbuild.serve.errors import error_payload
from webbuild.serve.loading import EngineLoader
from webbuild.serve.metrics import CONTENT_TYPE, ServerMetrics
from webbuild.serve.openapi import openapi_spec
from webbuild.serve.sse import ChunkSource, EventStream

log = logging.getLogger("webbuild.serve")

# A request body may hold a context window of text: bytes per token (JSON-escaped CJK is ~12, a run of spaces
# more) plus room for the fields around it (stop strings, logit_bias), and never more than MAX_BODY_BYTES.
# Anything larger cannot fit the window anyway, and refusing it unread keeps parsing and tokenizing short.
BODY_BYTES_PER_TOKEN = 64
BODY_BYTES_BASE = 64 << 10
MAX_BODY_BYTES = 8 << 20
# Threads that may wait on the engine at once. Its own pool, so requests queued on the engine never take the
# threads that static files and /metrics use (anyio's shared default is 40).
ENGINE_THREADS = 256
CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a request whose client left before the answer (never sent)


class EngineLike(Protocol):
    """What the API needs from ``webbuild.engine.Engine`` (tests pass fakes)."""

    model_name: str
    model: Any  # .defaults (dict): the model's sampling defaults; .cfg.context_window_size

    def create(
        self, request: ApiRequest, abort: threading.Event | None = None
    ) -> dict[str, Any] | Iterator[dict[str, Any]]: ...

    def metrics(self) -> dict[str, Any]: ...


# ---- request body ---------------------------------------------------------------------------------------


def body_limit(context_window_size: int) -> int:
    """The largest request body for a model with this context window."""
    return min(BODY_BYTES_BASE + BODY_BYTES_PER_TOKEN * context_window_size, MAX_BODY_BYTES)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def read_body(request: Request, limit: int) -> bytes:
    """The body of a JSON API call. A JSON content type is required: a page on another origin may send
    ``text/plain`` or a form without asking first (no CORS preflight), never ``application/json``, so no
    foreign page can make a local server generate. Larger than ``limit``: 413 before or while reading."""
    content_type = request.headers.get("content-type", "")
    if not _is_json(content_type):
        raise UnsupportedMediaTypeError(
            f"The request body must be JSON sent as Content-Type: application/json (got {content_type or 'none'}).",
            tip="Add the header, e.g. curl -H 'Content-Type: application/json' -d '{...}'.",
        )
    too_large = f"The request body is larger than {limit} bytes, which is more than this model's context window holds."
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestTooLargeError(too_large)
    parts, size = [], 0
    try:
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise RequestTooLargeError(too_large)
            parts.append(part)
    except ClientDisconnect as exc:
        raise InvalidRequestError("The client disconnected before sending the whole body.") from exc
    return b"".join(parts)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_body(body: bytes, endpoint: str, defaults: dict[str, Any]) -> ApiRequest:
    """The validated request (blocking: run it in a worker thread, the body may be megabytes); malformed,
    non-UTF-8 or NaN/Infinity JSON is a 400."""
    try:
        data = json.loads(body, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidRequestError(f"The request body is not valid JSON: {exc}") from exc
    parse = parse_chat_request if endpoint == CHAT else parse_completion_request
    return parse(data, defaults)


# ---- routes ---------------------------------------------------------------------------------------------


class Api:
    """The API of one engine; ``routes()`` are what ``server.create_app`` mounts."""

    def __init__(self, engine: EngineLike | EngineLoader, *, api_key: str | None = None) -> None:
        self.loader = engine if isinstance(engine, EngineLoader) else EngineLoader.loaded(engine)
        self.api_key = api_key
        self.metrics = ServerMetrics(self.loader.metrics)
        self.created = int(time.time())
        self.limiter = anyio.CapacityLimiter(ENGINE_THREADS)

    def routes(self) -> list[BaseRoute]:
        auth = [Middleware(BearerAuth, api_key=self.api_key)] if self.api_key else []
        v1 = Mount(
            "/v1",
            routes=[
                Route("/models", self.list_models, methods=["GET"]),
                Route("/models/{model:path}", self.get_model, methods=["GET"]),
                Route("/chat/completions", self.chat_completions, methods=["POST"]),
                Route("/completions", self.completions, methods=["POST"]),
            ],
            middleware=auth,
        )
        return [
            v1,
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.prometheus, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
        ]

    # -- simple endpoints
    def _model_card(self) -> dict[str, Any]:
        return {"id": self.engine.model_name, "object": "model", "created": self.created, "owned_by": "webbuild"}

    async def list_models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [self._model_card()]})

    async def get_model(self, request: Request) -> Response:
        self._check_model(request.path_params["model"])
        return JSONResponse(self._model_card())

    @property
    def engine(self) -> EngineLike:
        """The loaded engine; EngineUnavailableError (503) while it loads or after its load failed."""
        return self.loader.get()

    async def health(self, request: Request) -> Response:
        """503 until the engine is ready, so load balancers and scripts wait for it."""
        if self.loader.engine is not None:
            return JSONResponse({"status": "ok", "model": self.loader.engine.model_name})
        if self.loader.failure is not None:
            return JSONResponse({"status": "error", "message": self.loader.failure}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503)

    async def prometheus(self, request: Request) -> Response:
        body = await run_in_threadpool(self.metrics.render)  # reads engine.metrics(), which may take its lock
        return Response(body, media_type=CONTENT_TYPE)

    async def openapi(self, request: Request) -> Response:
        try:
            version = metadata.version("webbuild")
        except metadata.PackageNotFoundError:
            version = "0.0.0"
        loaded = self.loader.engine  # while it loads, the spec leaves the model's defaults out
        return JSONResponse(openapi_spec(version, loaded.model.defaults if loaded is not None else None))

    # -- generation
    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(request, CHAT)

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, COMPLETIONS)

    async def _generate(self, request: Request, endpoint: str) -> Response:
        started = time.perf_counter()
        try:
            response = await self._respond(request, endpoint, started)
        except Exception as exc:
            self.metrics.requests.labels(endpoint, str(error_payload(exc)[0])).inc()
            raise
        self.metrics.requests.labels(endpoint, str(response.status_code)).inc()
        return response

    async def _respond(self, request: Request, endpoint: str, started: float) -> Response:
        engine = self.engine  # 503 while it loads, before reading a body
        body = await read_body(request, body_limit(engine.model.cfg.context_window_size))
        req = await anyio.to_thread.run_sync(parse_body, body, endpoint, engine.model.defaults)
        self._check_model(req.model)
        if not req.stream:
            result = await self._complete(request, req)
            if result is None:  # the client left; nobody reads an answer
                self.metrics.aborted.inc()
                self.metrics.request_duration.observe(time.perf_counter() - started)
                return Response(status_code=CLIENT_CLOSED_REQUEST)
            usage = result.get("usage") or {}
            self.metrics.usage(usage)
            ttft = (usage.get("extra") or {}).get("time_to_first_token_s")
            if isinstance(ttft, int | float):
                self.metrics.time_to_first_token.observe(ttft)
            self.metrics.request_duration.observe(time.perf_counter() - started)
            return JSONResponse(result)
        # Usage is always asked for, so /metrics counts streamed tokens; the client gets it only if it asked.
        send_usage, req.include_usage = req.include_usage, True
        source = ChunkSource(
            await anyio.to_thread.run_sync(self.engine.create, req, limiter=self.limiter), self.limiter
        )
        try:
            first = await source.next()  # a failure this early is still a plain HTTP error
        except BaseException:
            await source.aclose()
            raise
        return EventStream(source, first, send_usage=send_usage, metrics=self.metrics, started=started)

    async def _complete(self, request: Request, req: ApiRequest) -> dict[str, Any] | None:
        """Runs a non-streamed request; None if the client disconnected first, which aborts the request."""
        abort = threading.Event()
        left, result, error = False, None, None
        async with anyio.create_task_group() as tg:

            async def watch_disconnect() -> None:
                nonlocal left
                # The body has been read, so the next message is the disconnect (or none before we answer).
                while (await request.receive())["type"] != "http.disconnect":
                    pass
                left = True
                abort.set()

            tg.start_soon(watch_disconnect)
            try:
                # Abandoned when cancelled (the server stopping), which aborts the request: the thread returns
                # within a step instead of holding the shutdown until the whole answer is generated.
                result = await anyio.to_thread.run_sync(
                    functools.partial(self.engine.create, req, abort=abort),
                    limiter=self.limiter,
                    abandon_on_cancel=True,
                )
            except Exception as exc:  # raised below, outside the task group, which would wrap it in a group
                error = exc
            finally:
                abort.set()  # a no-op once the request is done
                tg.cancel_scope.cancel()
        if error is not None:
            raise error
        return None if left else result

    def _check_model(self, model: str | None) -> None:
        if model is not None and model != self.engine.model_name:
            raise ModelNotFoundError(
                f"The model {model!r} does not exist on this server; it serves {self.engine.model_name!r}.",
                param="model",
            )
