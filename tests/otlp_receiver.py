"""A real OTLP/HTTP trace receiver on 127.0.0.1: POST /v1/traces with a protobuf
ExportTraceServiceRequest (opentelemetry-proto decodes it), answered as a collector does.

The tests read the spans it received; benchmarks/observability_cost.sh runs it as a process
(`python -m tests.otlp_receiver PORT`) so a traced server has somewhere to send its spans.
"""

from __future__ import annotations

import gzip
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass
class Span:
    """One received span, with the ids as hex strings and the attributes as Python values."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    links: list[tuple[str, str]]  # (trace id, span id)
    status_code: int
    service: str
    raw: Any = field(repr=False, default=None)


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def decode(body: bytes) -> list[Span]:
    request = ExportTraceServiceRequest.FromString(body)
    spans: list[Span] = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                spans.append(
                    Span(
                        name=s.name,
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(),
                        kind=s.kind,
                        start_ns=s.start_time_unix_nano,
                        end_ns=s.end_time_unix_nano,
                        attributes={a.key: _value(a.value) for a in s.attributes},
                        links=[(link.trace_id.hex(), link.span_id.hex()) for link in s.links],
                        status_code=s.status.code,
                        service=str(resource.get("service.name", "")),
                        raw=s,
                    )
                )
    return spans


class Receiver:
    """ThreadingHTTPServer on 127.0.0.1 (port 0: a free one) collecting every span."""

    def __init__(self, port: int = 0, store: bool = True) -> None:
        """`store`: keep the spans (tests); else only count them (a benchmark's long run)."""
        self.spans: list[Span] = []
        self.count = 0
        self.store = store
        self.requests = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                try:
                    spans = decode(body)
                except Exception as exc:  # a malformed export fails the test that reads it
                    self.send_error(400, str(exc))
                    return
                with receiver.lock:
                    if receiver.store:
                        receiver.spans.extend(spans)
                    receiver.count += len(spans)
                    receiver.requests += 1
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = int(self.server.server_address[1])
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def received(self) -> list[Span]:
        with self.lock:
            return list(self.spans)

    def wait_for(self, predicate: Any, timeout: float = 20.0) -> list[Span]:
        """Wait until predicate(spans) holds; the spans then."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.received()
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                raise TimeoutError(f"spans not received in {timeout} s; got {len(spans)}")
            time.sleep(0.05)


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 4318
    with Receiver(port, store=False) as receiver:
        print(f"OTLP/HTTP receiver on {receiver.endpoint}", flush=True)
        try:
            while True:
                time.sleep(5)
                print(f"{receiver.count} spans in {receiver.requests} exports", flush=True)
        except KeyboardInterrupt:
            print(f"final: {receiver.count} spans in {receiver.requests} exports", flush=True)


if __name__ == "__main__":
    main()
