"""What the protocol adapters call at a request's start and end: the request's record (its
ID, the caller's trace), then its trace and its access log line. One per app (app.state).

Tracing is on when an OTLP endpoint is configured the standard way
(OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, and neither
OTEL_SDK_DISABLED=true nor OTEL_TRACES_EXPORTER=none); OpenTelemetry is imported only then.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from app.config import Settings
from app.observability.logs import ACCESS_LOGGER, access_log_enabled, clean
from app.observability.request import PHASES, RequestRecord
from app.observability.trace_settings import TraceSettings

if TYPE_CHECKING:
    from app.observability.tracing import Tracing

log = logging.getLogger(__name__)

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")


def otlp_endpoint(environ: Mapping[str, str]) -> str | None:
    """The OTLP endpoint traces go to, or None when tracing is not configured."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return None
    for name in ENDPOINT_VARIABLES:
        if environ.get(name, "").strip():
            return environ[name].strip()
    return None


class Observer:
    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        self.environ = dict(os.environ if environ is None else environ)
        self.server_timing = settings.server_timing
        self.access = logging.getLogger(ACCESS_LOGGER) if access_log_enabled(settings) else None
        self.endpoint = otlp_endpoint(self.environ)
        self.trace_settings = TraceSettings.from_environment(
            self.environ, enabled=self.endpoint is not None
        )
        self.tracing: Tracing | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the exporter (when tracing is configured). Raises RuntimeError when it is
        configured in a way this server cannot honour: better no start than no traces."""
        if self.endpoint is None or self.tracing is not None:
            return
        protocol = next((self.environ[v] for v in PROTOCOL_VARIABLES if self.environ.get(v)), "")
        if protocol.strip().lower() not in ("", "http/protobuf"):
            raise RuntimeError(
                f"OTLP protocol {protocol!r} is not served: traces go over OTLP/HTTP (protobuf); "
                "set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf and point the endpoint at the "
                "receiver's HTTP port (4318 by convention)"
            )
        try:
            from app.observability.tracing import Tracing
        except ImportError as exc:
            raise RuntimeError(
                f"{ENDPOINT_VARIABLES[1]} is set but OpenTelemetry is not installed ({exc}): "
                "pip install 'resnet-serve[otel]', or unset it"
            ) from exc
        self.tracing = Tracing(self.trace_settings)
        rule = self.trace_settings.rule
        log.info(
            "tracing: spans to %s over OTLP/HTTP; one request in %d traced%s",
            self.endpoint,
            rule.rate,
            " (callers' traceparent decides theirs)" if self.trace_settings.parent_based else "",
        )

    def stop(self) -> None:
        """Send the spans still buffered, then stop the exporter."""
        if self.tracing is not None:
            tracing, self.tracing = self.tracing, None
            tracing.shutdown()

    # ------------------------------------------------------------------ requests
    def begin(
        self,
        request_id: str | bytes | None = None,
        traceparent: str | bytes | None = None,
        tracestate: str | bytes | None = None,
    ) -> RequestRecord:
        return RequestRecord(request_id, traceparent, tracestate, self.tracing)

    def finish(
        self,
        record: RequestRecord,
        protocol: str,
        method: str,
        route: str | None,
        span_name: str,
        span_attributes: Mapping[str, Any],
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """The request is answered: end its trace, write its access line. Never raises."""
        if not record.end_ns:
            record.end_ns = time.perf_counter_ns()
        try:
            if record.tracing is not None:
                record.tracing.finish_request(record, span_name, span_attributes)
            if self.access is not None:
                self.access_line(record, protocol, method, route, extra)
        except Exception:
            log.exception("could not record request %s", record.request_id)

    def access_line(
        self,
        record: RequestRecord,
        protocol: str,
        method: str,
        route: str | None,
        extra: Mapping[str, Any] | None,
    ) -> None:
        assert self.access is not None
        bounds = record.boundaries()
        end = max(record.end_ns, bounds[5])
        fields: dict[str, Any] = {
            "request_id": record.request_id,
            "protocol": protocol,
            "method": method,
            "route": route,
            "model": clean(record.model),
            "version": clean(record.version),
            "status": record.status,
            "bytes_in": record.bytes_in,
            "bytes_out": record.bytes_out,
            "images": record.images,
        }
        if record.batch_size:
            fields["batch_size"] = record.batch_size
        trace_id = record.trace_id
        if trace_id is not None:
            fields["trace_id"] = trace_id
        if extra:
            fields.update(extra)
        for i, name in enumerate(PHASES):
            fields[f"{name}_ms"] = round((bounds[i + 1] - bounds[i]) / 1e6, 3)
        fields["send_ms"] = round((end - bounds[5]) / 1e6, 3)
        fields["total_ms"] = round((end - bounds[0]) / 1e6, 3)
        self.access.info(
            "%s %s %d %.1f ms",
            method,
            route,
            record.status,
            fields["total_ms"],
            extra={"access": fields, "request_id": record.request_id},
        )
