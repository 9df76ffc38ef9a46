"""One request's record: its ID, the caller's trace context, and when each of its phases began
and ended.

The protocol adapter makes it when a request arrives (the HTTP middleware, the gRPC wrapper)
and puts it in the context variable CURRENT; the DataPlane marks decoding and the hand-off to
the batcher, and the batcher (each WorkItem keeps the record of the request it came from) marks
when its batch started and finished. At the end the adapter reads it for the Server-Timing
header, the access log line and the trace.

What it costs per request, tracing or not: this object, the ID and a few perf_counter_ns()
calls. No web framework, no OpenTelemetry here (app/observability/tracing.py has that).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from app.observability.tracing import Tracing

REQUEST_ID_HEADER = "x-request-id"
TRACEPARENT_HEADER = "traceparent"
TRACESTATE_HEADER = "tracestate"
MAX_REQUEST_ID = 128
# Visible ASCII, no space: what a log line and a header can carry as is. Anything else (too
# long, control characters, not ASCII, empty) is replaced by an ID of our own, never echoed.
_REQUEST_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_REQUEST_ID}}}")
# W3C Trace Context, version 00 (a later version may append fields after a dash)
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_TRACESTATE = re.compile(r"[\x20-\x7e]{0,512}")

# The phases of a request, in order; they tile the time from its arrival to its answer.
# read: the body read and parsed (and the checks before decoding); decode: its images decoded;
# queue: waiting for a batch; infer: its batch (or batches) run; post: from the batch's end to
# the answer's first byte (top-k, encoding). Server-Timing carries all but read.
PHASES = ("read", "decode", "queue", "infer", "post")
SERVER_TIMING_PHASES = ("decode", "queue", "infer", "post")

CURRENT: ContextVar[RequestRecord | None] = ContextVar("resnet_serve_request", default=None)


def current() -> RequestRecord | None:
    """The record of the request being handled in this task, if any."""
    return CURRENT.get()


def new_request_id() -> str:
    """32 random hex digits (os.urandom, as uuid4 and secrets use)."""
    return os.urandom(16).hex()


def valid_request_id(value: str | bytes | None) -> str | None:
    """The client's ID when it is well formed, else None (the caller makes one)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value if _REQUEST_ID.fullmatch(value) else None


def parse_traceparent(value: str | bytes | None) -> tuple[int, int, int] | None:
    """(trace id, parent span id, flags) of a well-formed W3C traceparent, else None."""
    if not value:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    m = _TRACEPARENT.fullmatch(value.strip())
    if m is None:
        return None
    version, trace_id, span_id, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    tid, sid = int(trace_id, 16), int(span_id, 16)
    if tid == 0 or sid == 0:
        return None
    return tid, sid, int(flags, 16)


def valid_tracestate(value: str | bytes | None) -> str | None:
    if not value:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value if _TRACESTATE.fullmatch(value) else None


class RequestRecord:
    """One request. Timestamps are time.perf_counter_ns(); 0 means "not reached"."""

    __slots__ = (
        "request_id",
        "start_ns",
        "parent",
        "tracestate",
        "tracing",
        "span",
        "endpoint",
        "route",
        "model",
        "version",
        "images",
        "status",
        "error",
        "bytes_in",
        "bytes_out",
        "decode_start_ns",
        "decode_end_ns",
        "submit_ns",
        "batch_start_ns",
        "batch_end_ns",
        "batch_size",
        "batch_spans",
        "respond_ns",
        "end_ns",
    )

    def __init__(
        self,
        request_id: str | bytes | None = None,
        traceparent: str | bytes | None = None,
        tracestate: str | bytes | None = None,
        tracing: Tracing | None = None,
        start_ns: int | None = None,
    ) -> None:
        self.request_id = valid_request_id(request_id) or new_request_id()
        self.start_ns = time.perf_counter_ns() if start_ns is None else start_ns
        self.parent = parse_traceparent(traceparent) if traceparent else None
        self.tracestate = valid_tracestate(tracestate) if self.parent and tracestate else None
        self.tracing = tracing
        self.span: Any = None  # the request's OpenTelemetry span, once tracing made one
        self.endpoint: str | None = None  # set for inference requests (metrics' endpoint label)
        self.route: str | None = None
        self.model: str | None = None
        self.version: str | None = None
        self.images = 0
        self.status = 0
        self.error: str | None = None  # the error's type, for the trace
        self.bytes_in = 0
        self.bytes_out = 0
        self.decode_start_ns = 0
        self.decode_end_ns = 0
        self.submit_ns = 0
        self.batch_start_ns = 0
        self.batch_end_ns = 0
        self.batch_size = 0
        self.batch_spans: list[Any] | None = None  # span contexts of the batches it rode in
        self.respond_ns = 0
        self.end_ns = 0

    # ------------------------------------------------------------------ marks
    def at_model(self, name: str, version: str) -> None:
        self.model, self.version = name, version

    def decode_started(self, images: int) -> None:
        self.images = images
        self.decode_start_ns = time.perf_counter_ns()

    def decode_ended(self) -> None:
        self.decode_end_ns = time.perf_counter_ns()

    def submitted(self, images: int) -> None:
        """Handed to the batcher: tracing starts the request's span here (a batch links to it)."""
        self.images = images
        self.submit_ns = time.perf_counter_ns()
        if self.tracing is not None and self.span is None:
            self.tracing.start_request(self)

    def batch_started(self, ns: int) -> None:
        """A batch holding (part of) this request started; the first one counts."""
        if not self.batch_start_ns or ns < self.batch_start_ns:
            self.batch_start_ns = ns

    def batch_ended(self, ns: int, size: int, span_context: Any = None) -> None:
        """... and ended; the last one counts."""
        self.batch_end_ns = max(self.batch_end_ns, ns)
        self.batch_size = max(self.batch_size, size)
        if span_context is not None:
            if self.batch_spans is None:
                self.batch_spans = []
            self.batch_spans.append(span_context)

    def responded(self, status: int) -> None:
        """The answer's first byte (HTTP: its headers) leaves now."""
        self.status = status
        self.respond_ns = time.perf_counter_ns()

    # ------------------------------------------------------------------ reading
    def boundaries(self) -> tuple[int, int, int, int, int, int]:
        """start, then the end of read, decode, queue and infer, then respond: contiguous and
        never decreasing, so the phases add up to the total exactly. A phase not reached lasts
        0; a mark after the answer (a batch that outlived its failed request) is clamped."""
        respond = self.respond_ns or time.perf_counter_ns()
        start = self.start_ns
        b1 = self.decode_start_ns or self.submit_ns or respond
        b2 = self.decode_end_ns or b1
        b3 = self.batch_start_ns or b2
        b4 = self.batch_end_ns or b3
        out = [start]
        for b in (b1, b2, b3, b4):
            out.append(min(max(b, out[-1]), respond))
        out.append(max(respond, out[-1]))
        return out[0], out[1], out[2], out[3], out[4], out[5]

    def phases_ns(self) -> dict[str, int]:
        """Each phase's duration and the total (start to the answer's first byte), in ns."""
        b = self.boundaries()
        out = {name: b[i + 1] - b[i] for i, name in enumerate(PHASES)}
        out["total"] = b[5] - b[0]
        return out

    def ran(self) -> tuple[bool, bool, bool, bool]:
        """Whether decode, queue, infer and post were reached."""
        queued = bool(self.submit_ns)
        return bool(self.decode_start_ns), queued, bool(self.batch_start_ns), self.batch_end_ns > 0

    def server_timing(self) -> str:
        """The Server-Timing header: decode, queue, infer, post and total in ms. A successful
        answer carries all five (0 for a phase it did not need); an error carries the phases
        it reached, and total."""
        phases = self.phases_ns()
        parts = []
        if self.status < 400:
            names: tuple[str, ...] = SERVER_TIMING_PHASES
        else:
            names = tuple(n for n, r in zip(SERVER_TIMING_PHASES, self.ran(), strict=True) if r)
        for name in names:
            parts.append(f"{name};dur={phases[name] / 1e6:.3f}")
        parts.append(f"total;dur={phases['total'] / 1e6:.3f}")
        return ", ".join(parts)

    @property
    def trace_id(self) -> str | None:
        """The trace this request belongs to (32 hex digits): its span's, or the caller's."""
        if self.span is not None and self.span.is_recording():
            return f"{self.span.get_span_context().trace_id:032x}"
        if self.parent is not None:
            return f"{self.parent[0]:032x}"
        return None


def request_id() -> str | None:
    """The ID of the request being handled in this task (None outside a request)."""
    record = CURRENT.get()
    return record.request_id if record is not None else None


# ---------------------------------------------------------------------- batches
class _Item(Protocol):
    """What the batcher's WorkItem offers here."""

    request: RequestRecord | None
    future: asyncio.Future[Any]

    @property
    def size(self) -> int: ...


def request_ids(items: Sequence[_Item], limit: int = 16) -> str:
    """The IDs of a batch's requests, for a log line about the batch (the first `limit`)."""
    ids = list(dict.fromkeys(i.request.request_id for i in items if i.request is not None))
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return (", ".join(ids[:limit]) or "none") + more


def batch_started(items: Sequence[_Item]) -> int:
    """The batcher is about to run `items` as one batch: mark each request; the start time."""
    now = time.perf_counter_ns()
    for item in items:
        if item.request is not None:
            item.request.batch_started(now)
    return now


def batch_ended(model: str, items: Sequence[_Item], start_ns: int) -> None:
    """The batch ran (its requests have their answers): mark each request, and trace the batch
    when tracing is on and one of its requests is traced."""
    # one entry per request (a request larger than max_batch_size may have several items here)
    records = list(dict.fromkeys(item.request for item in items if item.request is not None))
    if not records:
        return
    now = time.perf_counter_ns()
    size = sum(item.size for item in items)
    span_context = None
    tracing = records[0].tracing
    if tracing is not None:
        failed = any(
            f.done() and not f.cancelled() and f.exception() is not None
            for f in (item.future for item in items)
        )
        span_context = tracing.batch(model, records, start_ns, now, size, failed)
    for record in records:
        record.batch_ended(now, size, span_context)
