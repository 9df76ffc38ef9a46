"""Every HTTP request observed: its request ID (the client's X-Request-ID when well formed,
else a new one) echoed in `X-Request-ID` on every answer, errors included; `Server-Timing`
(decode, queue, infer, post, total in ms) on the answers of the inference routes; its trace
and access line once answered (app/observability).

RequestObserver is the outermost ASGI layer, outside even Starlette's ServerErrorMiddleware,
so a 500 from an unexpected exception carries the ID too: ObservedFastAPI puts it there.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.logs import clean
from app.observability.observer import Observer
from app.observability.request import CURRENT, RequestRecord

REQUEST_ID = b"x-request-id"
TRACEPARENT = b"traceparent"
TRACESTATE = b"tracestate"
SERVER_TIMING = b"server-timing"
# the routes whose answers carry Server-Timing: /v1 classify and V2 infer
TIMED_SUFFIXES = ("/classify", "/infer")


def route_of(scope: Scope) -> str | None:
    """The matched route's template (e.g. /v2/models/{name}/infer), once routing ran."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


class RequestObserver:
    def __init__(self, app: ASGIApp, observer: Observer) -> None:
        self.app = app
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        observer = self.observer
        request_id = traceparent = tracestate = None
        for key, value in scope["headers"]:
            if key == REQUEST_ID:
                request_id = value
            elif key == TRACEPARENT:
                traceparent = value
            elif key == TRACESTATE:
                tracestate = value
        record = observer.begin(request_id, traceparent, tracestate)
        id_header = (REQUEST_ID, record.request_id.encode("ascii"))
        timing = observer.server_timing

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.responded(message["status"])
                headers = [*message.get("headers", ()), id_header]
                if timing and (route_of(scope) or "").endswith(TIMED_SUFFIXES):
                    headers.append((SERVER_TIMING, record.server_timing().encode("ascii")))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                record.bytes_out += len(message.get("body", b""))
                if not message.get("more_body", False):
                    record.end_ns = time.perf_counter_ns()
            await send(message)

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                record.bytes_in += len(message.get("body", b""))
            return message

        token = CURRENT.set(record)
        try:
            await self.app(scope, counted_receive if observer.access else receive, observed_send)
        except BaseException as exc:
            if not record.status:  # nothing answered: the server's 500, or a dropped connection
                record.status = 500
            record.error = record.error or type(exc).__name__
            raise
        finally:
            CURRENT.reset(token)
            self._finish(record, scope)

    def _finish(self, record: RequestRecord, scope: Scope) -> None:
        if record.tracing is None and self.observer.access is None:
            return  # nothing to write: tracing off, no access log
        route = route_of(scope)
        params: dict[str, Any] = scope.get("path_params") or {}
        if record.model is None and isinstance(params.get("name"), str):
            record.model = params["name"]
        if record.version is None and isinstance(params.get("version"), str):
            record.version = params["version"]
        if record.error is None and record.status >= 500:
            record.error = f"HTTP {record.status}"
        method = str(scope.get("method", ""))
        shown = route if route is not None else clean(str(scope.get("path", "")), 200)
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "http.route": route,
            "http.response.status_code": record.status,
            "url.path": clean(str(scope.get("path", "")), 200),
        }
        self.observer.finish(record, "http", method, shown, f"{method} {shown}", attributes)


class ObservedFastAPI(FastAPI):
    """FastAPI with RequestObserver around the whole middleware stack (app.state.observer)."""

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        observer = getattr(self.state, "observer", None)
        return stack if observer is None else RequestObserver(stack, observer)
