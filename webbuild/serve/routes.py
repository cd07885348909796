"""The OpenAI-compatible REST API on a webbuild engine: /v1 routes, SSE streaming, /health, /metrics, /openapi.json.

The engine blocks, so every call into it runs in a worker thread and the event loop stays free for other
requests. A streamed response pulls one chunk per thread hop and closes the engine's iterator however it
ends (done, error, client gone), which aborts the request and frees its KV cache pages. A non-streamed one
waits for the engine while listening for the client's disconnect, which aborts the request the same way.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from typing import Any, Protocol

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webbuild.engine.request import Request as ApiRequest
from webbuild.engine.request import parse_chat_request, parse_completion_request
from webbuild.errors import AuthenticationError, InvalidRequestError, ModelNotFoundError, RequestTooLargeError
from webbuild.serve.errors import error_payload
from webbuild.serve.loading import EngineLoader
from webbuild.serve.metrics import CONTENT_TYPE, ServerMetrics
from webbuild.serve.openapi import openapi_spec

log = logging.getLogger("webbuild.serve")

MAX_BODY_BYTES = 8 << 20  # a context window of text is far smaller; this only stops abuse
# Threads that may wait on the engine at once. Its own pool, so requests queued on the engine never take the
# threads that static files and /metrics use (anyio's shared default is 40).
ENGINE_THREADS = 256
CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
_END = object()
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a request whose client left before the answer (never sent)


class EngineLike(Protocol):
    """What the API needs from ``webbuild.engine.Engine`` (tests pass fakes)."""

    model_name: str
    model: Any  # .defaults (dict): the model's sampling defaults

    def create(
        self, request: ApiRequest, abort: threading.Event | None = None
    ) -> dict[str, Any] | Iterator[dict[str, Any]]: ...

    def metrics(self) -> dict[str, Any]: ...


# ---- request body and auth ------------------------------------------------------------------------------


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def read_json(request: Request) -> Any:
    """The body as JSON; malformed, non-UTF-8, NaN/Infinity or oversized bodies are 400/413 errors."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise RequestTooLargeError(f"The request body is larger than {MAX_BODY_BYTES} bytes.")
    parts, size = [], 0
    try:
        async for part in request.stream():
            size += len(part)
            if size > MAX_BODY_BYTES:
                raise RequestTooLargeError(f"The request body is larger than {MAX_BODY_BYTES} bytes.")
            parts.append(part)
    except ClientDisconnect as exc:
        raise InvalidRequestError("The client disconnected before sending the whole body.") from exc
    try:
        return json.loads(b"".join(parts), parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidRequestError(f"The request body is not valid JSON: {exc}") from exc


class BearerAuth:
    """Refuses requests without ``Authorization: Bearer <api_key>`` (compared in constant time)."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app, self.key = app, api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.key):
                raise AuthenticationError(
                    "Missing or incorrect API key.", tip="Send the header `Authorization: Bearer <key>`."
                )
        await self.app(scope, receive, send)


# ---- streaming ------------------------------------------------------------------------------------------


class ChunkSource:
    """The engine's blocking chunk iterator, stepped in worker threads; ``aclose`` aborts the request."""

    def __init__(self, iterator: Iterator[dict[str, Any]], limiter: anyio.CapacityLimiter) -> None:
        self._it = iterator
        self._limiter = limiter
        self._lock = threading.Lock()
        self._closed = False

    def _next(self) -> Any:
        with self._lock:
            return _END if self._closed else next(self._it, _END)

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close = getattr(self._it, "close", None)
        if close is None:
            return
        try:
            close()
        except ValueError:  # a plain generator still running a step in another thread: close after it
            with self._lock:
                close()

    async def next(self) -> Any:
        return await anyio.to_thread.run_sync(self._next, limiter=self._limiter)

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):  # must finish even when the stream is being cancelled
            await anyio.to_thread.run_sync(self._close, limiter=self._limiter)


def _event(payload: Any) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def _has_text(chunk: dict[str, Any]) -> bool:
    for choice in chunk.get("choices") or ():
        if choice.get("text") or (choice.get("delta") or {}).get("content"):
            return True
    return False


class EventStream(Response):
    """An SSE response of engine chunks: ``data: {...}`` events, then ``data: [DONE]``.

    An error after the first byte becomes one ``data: {"error": ...}`` event, then the stream ends. A task
    listens for the client's disconnect and cancels the stream; the engine iterator is closed in every case.
    """

    def __init__(
        self, source: ChunkSource, first: Any, *, send_usage: bool, metrics: ServerMetrics, started: float
    ) -> None:
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),  # proxies (nginx) must pass events through at once
        ]
        self.source, self.first, self.send_usage = source, first, send_usage
        self.metrics, self.started = metrics, started
        self.disconnected = False
        self.sent_all = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as tg:

            async def watch_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                if not self.sent_all:
                    self.disconnected = True
                    tg.cancel_scope.cancel()

            tg.start_soon(watch_disconnect)
            try:
                await self._stream(send)
            finally:
                await self.source.aclose()
                if self.disconnected:
                    self.metrics.aborted.inc()
                self.metrics.request_duration.observe(time.perf_counter() - self.started)
            tg.cancel_scope.cancel()

    async def _send(self, send: Send, message: Message) -> bool:
        try:
            await send(message)
            return True
        except OSError:  # the connection is gone (ASGI servers of spec 2.4 report it this way)
            self.disconnected = True
            return False

    async def _stream(self, send: Send) -> None:
        start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
        if not await self._send(send, start):
            return
        chunk, last_text = self.first, None
        try:
            while chunk is not _END:
                now = time.perf_counter()
                if _has_text(chunk):
                    if last_text is None:
                        self.metrics.time_to_first_token.observe(now - self.started)
                    else:
                        self.metrics.inter_token_latency.observe(now - last_text)
                    last_text = now
                is_usage = chunk.get("choices") == [] and "usage" in chunk
                if is_usage:
                    self.metrics.usage(chunk["usage"])
                if not is_usage or self.send_usage:
                    message = {"type": "http.response.body", "body": _event(chunk), "more_body": True}
                    if not await self._send(send, message):
                        return
                chunk = await self.source.next()
            tail = _event("[DONE]")
        except Exception as exc:  # every failure becomes the one error event
            status, body = error_payload(exc)
            if status >= 500:
                log.error("stream failed", exc_info=exc)
            tail = _event(body)
        self.sent_all = True  # a disconnect from now on is the server ending the finished response
        await self._send(send, {"type": "http.response.body", "body": tail, "more_body": False})


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
        body = await read_json(request)
        parse = parse_chat_request if endpoint == CHAT else parse_completion_request
        req = parse(body, self.engine.model.defaults)
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
                result = await anyio.to_thread.run_sync(
                    functools.partial(self.engine.create, req, abort=abort), limiter=self.limiter
                )
            except Exception as exc:  # raised below, outside the task group, which would wrap it in a group
                error = exc
            finally:
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
