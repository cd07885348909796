"""What keeps other web pages from using a server they can reach: the ``Host`` check against DNS rebinding, the
CORS refusals in OpenAI's envelope, and the headers that confine the site's pages (CSP, nosniff, Referrer-Policy).

A page on any site can make the visitor's browser send requests to ``http://127.0.0.1:8000``. It cannot read
the answers (same-origin policy) unless its own domain name resolves to that address: DNS rebinding. Then the
request carries the attacker's name in ``Host``, so a server that answers only the names it is reached by
(``localhost``, IP addresses, the machine's name and ``--allowed-hosts``) refuses it. An IP address in
``Host`` cannot be rebound and is always accepted.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webbuild.serve.errors import envelope

# The page needs its own scripts and workers (and blob: workers, which createEngineWorker makes to embed a site
# elsewhere), WebAssembly compilation (the model library), same-origin fetches (manifest, weights) and data:
# icons. Nothing inline: the page renders model output with textContent.
SITE_CSP = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; connect-src 'self'; "
    "img-src 'self' data:; style-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'"
)
SECURITY_HEADERS = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}
_WILDCARD_BINDS = ("0.0.0.0", "::", "")


def default_allowed_hosts(bind_host: str) -> list[str]:
    """Names a server bound to ``bind_host`` is reached by: localhost always; the bound name when it is one; the
    machine's own names when it listens on every interface."""
    names = ["localhost", "*.localhost"]
    if bind_host in _WILDCARD_BINDS:
        names += [socket.gethostname(), socket.getfqdn()]
    elif not _is_ip(bind_host):
        names.append(bind_host)
    return [n.lower() for n in dict.fromkeys(names) if n]


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _hostname(host: str) -> str:
    """``Host`` without its port: ``[::1]:8000`` -> ``::1``, ``example.com:80`` -> ``example.com``."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class HostCheck:
    """Answers 400 in the envelope to requests whose ``Host`` names none of ``allowed`` (``*.example.com`` covers
    subdomains, ``*`` everything); requests without ``Host`` (HTTP/1.0) pass."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        allowed = [a.lower().rstrip(".") for a in allowed]
        self.any = "*" in allowed
        self.exact = {a for a in allowed if not a.startswith("*.")}
        self.suffixes = tuple(a[1:] for a in allowed if a.startswith("*."))

    def allows(self, host: str) -> bool:
        name = _hostname(host.strip()).lower().rstrip(".")
        return self.any or _is_ip(name) or name in self.exact or name.endswith(self.suffixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        host = Headers(scope=scope).get("host") if scope["type"] == "http" else None
        if host is None or self.allows(host):
            return await self.app(scope, receive, send)
        name = _hostname(host)
        message = (
            f"This server does not answer to the host name {name!r}: a page that resolves its own name to this "
            f"server (DNS rebinding) must not reach it. To serve that name, start it with --allowed-hosts {name}."
        )
        await JSONResponse(envelope(message, "invalid_request_error", "host_not_allowed"), 400)(scope, receive, send)


class SecurityHeaders:
    """Adds ``headers`` to every HTTP response (that does not set them itself)."""

    def __init__(self, app: ASGIApp, headers: dict[str, str] = SECURITY_HEADERS) -> None:
        self.app, self.headers = app, headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in self.headers.items():
                    headers.setdefault(key, value)
            await send(message)

        await self.app(scope, receive, with_headers)


class EnvelopeCORS(CORSMiddleware):
    """Starlette's CORS handling, with its refusal of a preflight in OpenAI's envelope instead of plain text."""

    def __init__(self, app: ASGIApp, allow_origins: Sequence[str], **kwargs: object) -> None:
        super().__init__(app, allow_origins=allow_origins, **kwargs)  # type: ignore[arg-type]

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        refused = bytes(response.body).decode()  # "Disallowed CORS origin, method"
        message = (
            f"{refused}: this server allows cross-origin calls only from the origins given to --allow-origins "
            "(and the methods and headers the API uses)."
        )
        headers = {k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")}
        return JSONResponse(envelope(message, "invalid_request_error", "cors_refused"), 400, headers=headers)
