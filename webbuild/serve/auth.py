"""API-key authentication for the REST API: one ASGI middleware, mounted on the API routes only."""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from webbuild.errors import AuthenticationError


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
