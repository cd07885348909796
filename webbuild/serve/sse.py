"""Server-sent events of engine chunks: the engine's blocking iterator stepped in worker threads, framed as
``data: {...}`` events ending in ``data: [DONE]``, closed (which aborts the request) however the stream ends."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from webbuild.serve.errors import error_payload
from webbuild.serve.metrics import ServerMetrics

log = logging.getLogger("webbuild.serve")

_END = object()


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
