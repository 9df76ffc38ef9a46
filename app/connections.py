"""Connection hygiene under uvicorn's httptools protocol: what a hostile or careless client can
do to a connection before the app sees a request, or after it has answered one.

`GuardedHttpTools` is uvicorn's HttpToolsProtocol plus four small guards (uvicorn has none of
them; each is a few lines around its parser callbacks, which we leave untouched):

- Lingering close. An early answer (413 from Content-Length, or mid-stream when a chunked
  body passes the limit, or any error before the body is read) says `Connection: close`, and
  the connection keeps reading and discarding the rest of the body, up to `linger_bytes` and
  `linger_timeout_s`, before it closes (nginx's lingering close): closing with the body unread
  would make the kernel reset the connection, and a client that sends its whole body before
  reading (urllib, requests, httpx) would never see the status.
  When the client asked `Expect: 100-continue` and was not told to continue, it sends no
  body, and the connection closes at once.
- Header timeout. A request whose headers are not complete `header_timeout_s` after the
  connection opened (or after the first byte of the next request on a kept-alive one) is
  answered 408 and closed: slowloris clients trickling a header a byte at a time, and
  connections opened and never used.
- Body timeout. A body that sends nothing for `body_timeout_s` (nginx's client_body_timeout:
  between reads, not in total) is answered 408 and closed; the app sees a disconnect.
- Connection cap. Past `max_connections` open connections (per process), a new connection's
  request is answered at once with 503, Retry-After and `Connection: close` (one that sends
  no request within a second gets the same and is closed), logged (at most
  once a second, with the count) and counted in resnet_serve_connections_rejected_total, instead
  of the process running out of descriptors and the kernel resetting everyone.
  resnet_serve_open_connections is the gauge.

Idle kept-alive connections are closed by uvicorn's own timeout_keep_alive (keep_alive_timeout_s).
`raise_fd_limit()` lifts the soft RLIMIT_NOFILE to the hard limit at start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from dataclasses import dataclass, field
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from app.config import Settings
from app.metrics import Metrics

log = logging.getLogger(__name__)

OVER_CAP_WAIT_S = 1.0  # an over-cap connection that sends no request is answered 503 after this
FD_RESERVE = 64  # descriptors kept for model files, threads' pipes, logs, metrics files


def raise_fd_limit() -> int:
    """Raise the soft descriptor limit to the hard one; log both. Returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.info(
                "file descriptors: soft limit raised from %d to %d (hard %s)", soft, target, hard
            )
            return target
        except (ValueError, OSError) as exc:
            log.warning("file descriptors: cannot raise soft limit %d to %d: %s", soft, target, exc)
            return int(soft)
    log.info("file descriptors: soft limit %s, hard %s", soft, hard)
    return int(soft)


def default_max_connections(fd_limit: int) -> int:
    """Connections a process may hold when max_connections is 0: what its descriptors allow."""
    return max(16, fd_limit - FD_RESERVE)


def _raw_response(status: int, reason: str, message: str, extra: str = "") -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}connection: close\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class ConnectionGuard:
    """Per-process limits and counters shared by every connection of one server."""

    max_connections: int
    header_timeout_s: float
    body_timeout_s: float
    linger_bytes: int
    linger_timeout_s: float
    retry_after_s: int
    metrics: Metrics | None = None
    open: int = 0
    rejected: int = 0
    _last_log: float = field(default=-1e9)
    _unlogged: int = 0

    def opened(self) -> bool:
        """Count a new connection; False when it is over the cap (it still counts as open)."""
        self.open += 1
        if self.metrics is not None:
            self.metrics.open_connections.inc()
        return self.open <= self.max_connections

    def closed(self) -> None:
        self.open -= 1
        if self.metrics is not None:
            self.metrics.open_connections.dec()

    def refused(self) -> None:
        self.rejected += 1
        self._unlogged += 1
        if self.metrics is not None:
            self.metrics.connections_rejected.inc()
        now = time.monotonic()
        if now - self._last_log >= 1.0:  # rate-limited: one line a second at most
            log.warning(
                "connection cap of %d reached: refused %d connection(s) with 503 (%d open)",
                self.max_connections,
                self._unlogged,
                self.open,
            )
            self._last_log, self._unlogged = now, 0


class _LingeringTransport:
    """The transport a request cycle writes to: close() lingers while its body is unread."""

    def __init__(
        self, protocol: GuardedHttpTools, transport: asyncio.Transport, cycle: RequestResponseCycle
    ) -> None:
        self._protocol = protocol
        self._transport = transport
        self._cycle = cycle

    def write(self, data: bytes) -> None:
        self._transport.write(data)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._protocol.close_after_body(self._cycle)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with the guards above; `guard` is set per server by
    `protocol_class()`."""

    guard: ConnectionGuard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._counted = False
        self._over_cap = False
        self._body_done = True
        self._lingering = False
        self._linger_left = 0
        self._timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ connection
    # type-ignore reason: uvicorn narrows asyncio's BaseTransport to Transport; we keep that
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.guard.metrics is None:
            self.guard.metrics = _metrics_of(self.app)
        self._counted = True
        self._over_cap = not self.guard.opened()
        if self._over_cap:  # holds a descriptor we are short of: a second to say what it wants
            self._arm(min(OVER_CAP_WAIT_S, self.guard.header_timeout_s), self._over_cap_timeout)
        else:
            self._arm(self.guard.header_timeout_s, self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted:
            self._counted = False
            self.guard.closed()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._linger_left -= len(data)
            if self._linger_left < 0:
                self._close_now()
                return
        super().data_received(data)

    # ------------------------------------------------------------------ parser callbacks
    def on_message_begin(self) -> None:
        if self._lingering:
            return
        super().on_message_begin()
        self._body_done = False
        if self._timer is None:  # next request on a kept-alive connection
            self._arm(self.guard.header_timeout_s, self._header_timeout)

    def on_url(self, url: bytes) -> None:
        if not self._lingering:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._lingering:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._lingering:
            return
        self._disarm()
        app = self.app
        if self._over_cap:
            self.guard.refused()
            self.app = _over_capacity(self.guard)
        try:
            super().on_headers_complete()
        finally:
            self.app = app
        cycle = self.cycle
        if cycle is None or cycle.scope is not self.scope:
            return  # upgraded (websocket): not ours to guard
        # type-ignore reason: the cycle only writes, closes and asks is_closing: the proxy does
        cycle.transport = _LingeringTransport(self, self.transport, cycle)  # type: ignore[assignment]
        send = cycle.send

        async def send_early_aware(message: Any) -> None:
            if message["type"] == "http.response.start" and cycle.more_body:
                cycle.keep_alive = False  # answered before the body was read: close after it
                self._disarm()
            await send(message)

        # type-ignore reason: a per-cycle wrapper; run_asgi passes self.send, which finds it
        cycle.send = send_early_aware  # type: ignore[method-assign]
        if not self._body_done:
            self._arm(self.guard.body_timeout_s, self._body_timeout)

    def on_body(self, body: bytes) -> None:
        if self._lingering:
            return
        if self._timer is not None:
            self._arm(self.guard.body_timeout_s, self._body_timeout)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._body_done = True
        if self._lingering:
            self._close_now()
            return
        self._disarm()
        super().on_message_complete()

    # ------------------------------------------------------------------ lingering close
    def close_after_body(self, cycle: RequestResponseCycle) -> None:
        """A cycle's close(): at once if its body was all received (or will never come: the
        client waits for a 100 Continue it was not sent), else read and discard the rest,
        within the byte and time bounds, then close."""
        if not cycle.more_body or self.transport.is_closing() or cycle.waiting_for_100_continue:
            self._close_now()
            return
        if self._lingering:
            return
        self._lingering = True
        self._linger_left = self.guard.linger_bytes
        self._arm(self.guard.linger_timeout_s, self._close_now)
        self.flow.resume_reading()

    def send_400_response(self, msg: str) -> None:
        if self._lingering:  # the discarded body did not parse: we have answered already
            self._close_now()
            return
        super().send_400_response(msg)

    def _close_now(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.close()

    # ------------------------------------------------------------------ timers
    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _header_timeout(self) -> None:
        self._timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # pipelined: answer the one in progress, then close
            return
        self._reply_and_close(
            _raw_response(
                408,
                "Request Timeout",
                f"request headers not received within {self.guard.header_timeout_s:g} s",
            )
        )

    def _over_cap_timeout(self) -> None:
        self._timer = None
        cycle: object | None = (
            self.cycle
        )  # uvicorn types it as always set; it is None between requests
        if cycle is not None:
            return  # its request is being answered 503 already
        self.guard.refused()
        self._reply_and_close(
            _raw_response(
                503,
                "Service Unavailable",
                _over_cap_message(self.guard),
                f"retry-after: {self.guard.retry_after_s}\r\n",
            )
        )

    def _body_timeout(self) -> None:
        self._timer = None
        if self.flow.read_paused:  # we stopped reading, not the client: not its fault
            self._arm(self.guard.body_timeout_s, self._body_timeout)
            return
        cycle = self.cycle
        if cycle is not None and cycle.response_started:
            return
        self._reply_and_close(
            _raw_response(
                408,
                "Request Timeout",
                f"request body stalled: nothing received for {self.guard.body_timeout_s:g} s",
            ),
            cycle,
        )

    def _reply_and_close(self, data: bytes, cycle: RequestResponseCycle | None = None) -> None:
        if self.transport.is_closing():
            return
        if cycle is not None:  # the app waiting on the body sees a disconnect
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.write(data)
        self.transport.close()


def _over_cap_message(guard: ConnectionGuard) -> str:
    return (
        f"server is at its connection cap ({guard.max_connections} open); "
        f"retry after {guard.retry_after_s} s"
    )


def _over_capacity(guard: ConnectionGuard) -> Any:
    body = json.dumps({"error": _over_cap_message(guard)}).encode()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(guard.retry_after_s).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return app


def _metrics_of(app: Any) -> Metrics | None:
    """The Metrics of the FastAPI app under uvicorn's wrappers (None if there is none)."""
    for _ in range(10):
        metrics = getattr(getattr(app, "state", None), "metrics", None)
        if isinstance(metrics, Metrics):
            return metrics
        app = getattr(app, "app", None)
    return None


def protocol_class(guard: ConnectionGuard) -> type[GuardedHttpTools]:
    """The protocol class to give uvicorn.Config(http=...), bound to this server's guard."""
    return type("GuardedHttpTools", (GuardedHttpTools,), {"guard": guard})


def guarded_protocol(settings: Settings) -> type[GuardedHttpTools]:
    """uvicorn's http protocol for these settings (one guard, so one count, per process)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    fd_limit = soft if soft != resource.RLIM_INFINITY else 1 << 20
    guard = ConnectionGuard(
        max_connections=settings.max_connections or default_max_connections(int(fd_limit)),
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        linger_bytes=settings.linger_bytes or 2 * settings.max_body_bytes,
        linger_timeout_s=settings.linger_timeout_s,
        retry_after_s=settings.retry_after_s,
    )
    return protocol_class(guard)
