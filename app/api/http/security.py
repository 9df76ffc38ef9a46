"""ASGI middleware in front of every route, the V2 protocol's included:

- BearerAuth: when a token is configured, everything but health (and /metrics, unless
  protect_metrics, and the web page's files) needs `Authorization: Bearer <token>`; compared
  in constant time.
- BodyLimit: stops any body (chunked ones too) at the limit, whatever route reads it; the
  error reaches the route, so its metrics count the 413. Routes also refuse a declared
  Content-Length above the limit before reading (app/api/http/body.py).
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.http.errors import error_response
from app.errors import PayloadTooLarge, Unauthorized

HEALTH_PATHS = ("/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready")


class BearerAuth:
    """`public` and `public_prefixes`: further paths that need no token (the web page and its
    static files, which hold no data: every call the page makes sends the token)."""

    def __init__(
        self,
        app: ASGIApp,
        token: str,
        protect_metrics: bool = False,
        public: tuple[str, ...] = (),
        public_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()
        self.open_paths = frozenset(
            HEALTH_PATHS + (() if protect_metrics else ("/metrics",)) + public
        )
        self.open_prefixes = public_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        given = b""
        for key, value in scope["headers"]:
            if key == b"authorization":
                given = value
                break
        # the public prefixes are looked at only without the right token: an authorised
        # request costs what it cost before the page existed
        if not hmac.compare_digest(given, self.expected) and not (
            self.open_prefixes and scope["path"].startswith(self.open_prefixes)
        ):
            why = "missing" if not given else "wrong"
            response = error_response(
                Unauthorized(f"{why} bearer token: send 'Authorization: Bearer <token>'")
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise PayloadTooLarge(f"body larger than the limit of {self.limit} bytes")
            return message

        await self.app(scope, limited, send)
