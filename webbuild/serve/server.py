"""The HTTP server under the app: uvicorn's h11 protocol with deadlines for slow clients and malformed requests
answered in OpenAI's envelope.

uvicorn starts no timer while a request's headers or body arrive: a client that opens a connection and sends
nothing, or sends a byte now and then, holds it for ever (its keep-alive timer is cancelled by every byte). Here
each connection gets, whatever it trickles, ``header_timeout_s`` from its opening (or the end of its previous
response) to finish a request's headers, and ``body_timeout_s`` from the headers to finish the body. A slow
*response* (a long SSE stream) is never cut: only what the client owes is timed. The asyncio loop holds idle
sockets cheaply, so many of them at once do not slow the others; the deadline frees them.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from webbuild.serve.errors import envelope

_HEADERS, _BODY = "headers", "body"
GRACEFUL_SHUTDOWN_S = 0.5


@dataclass(frozen=True)
class Limits:
    """What a client may take: seconds for a request's headers and for its body, seconds a kept-alive connection
    may sit idle, bytes of request line + headers."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_s: int = 5
    max_header_bytes: int = 16 << 10


def _raw_response(status: int, reason: str, message: str, code: str) -> bytes:
    """A whole HTTP/1.1 response, written without h11 (used where h11 has no request to answer)."""
    body = json.dumps(envelope(message, "invalid_request_error", code)).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "x-content-type-options: nosniff\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with ``limits`` (set by ``protocol_for``) on what a client owes."""

    limits = Limits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: str | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._received = False  # bytes of the current request have arrived

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._received = True
        super().data_received(data)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def send_400_response(self, msg: str) -> None:
        """Malformed HTTP (h11 refused it): the envelope, like every other error, then the connection closes."""
        self._cancel()
        if self.conn.our_state is not h11.SEND_BODY:  # not in the middle of another response
            message = (
                f"{msg} The request line or headers are malformed, or longer than {self.limits.max_header_bytes} bytes."
            )
            self.transport.write(_raw_response(400, "Bad Request", message, "bad_request"))
        self.transport.close()

    # -- deadlines --------------------------------------------------------------------------------------------
    def _arm(self) -> None:
        """Starts the deadline of what the client owes now (headers, body or nothing) when that changes."""
        state = self.conn.their_state
        phase = _HEADERS if state is h11.IDLE else _BODY if state is h11.SEND_BODY else None
        if phase == self._phase:
            return
        self._cancel()
        self._phase = phase
        if phase == _HEADERS:
            self._received = bool(self.conn.trailing_data[0])
        if phase is not None and not self.transport.is_closing():
            seconds = self.limits.header_timeout_s if phase == _HEADERS else self.limits.body_timeout_s
            self._deadline = self.loop.call_later(seconds, self._expire)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        """The client did not finish in time: 408 if it had started a request nobody answered, then close."""
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        unanswered = cycle is None or not cycle.response_started
        if self._phase == _BODY and cycle is not None and unanswered:
            cycle.disconnected = True  # the app's receive() now says "disconnect" and its answer goes nowhere
            cycle.message_event.set()
        if unanswered and (self._phase == _BODY or self._received):
            what = "body" if self._phase == _BODY else "headers"
            seconds = self.limits.body_timeout_s if self._phase == _BODY else self.limits.header_timeout_s
            message = f"The request {what} did not arrive within {seconds:g} s."
            self.transport.write(_raw_response(408, "Request Timeout", message, "request_timeout"))
        self.transport.close()


def protocol_for(limits: Limits) -> type[GuardedH11Protocol]:
    """The protocol class uvicorn instantiates per connection, carrying ``limits``."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})


def server_config(
    app: ASGIApp, host: str, port: int, *, limits: Limits = Limits(), log_level: str = "warning"
) -> uvicorn.Config:
    """uvicorn's settings for ``webbuild serve`` and ``serving``: the guarded h11 protocol and a short graceful
    shutdown (half a second for answers about to end, then running requests are cancelled, which aborts them), so
    Ctrl-C ends the process within a second even while streams are open."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=protocol_for(limits),
        h11_max_incomplete_event_size=limits.max_header_bytes,
        timeout_keep_alive=limits.keep_alive_s,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,  # type: ignore[arg-type]  # uvicorn waits on a float fine
        server_header=False,
    )
