"""OpenTelemetry traces of inference requests (the `otel` extra), exported over OTLP/HTTP
(protobuf) by a BatchSpanProcessor: the exporter's own thread sends, never the event loop.

Imported only when tracing is configured (app/observability/observer.py); with tracing off
nothing here runs and no span object is ever made.

A traced request gives one SERVER span (its caller's `traceparent` as parent, when it sent
one) with a child per phase: read, decode, queue, infer, postprocess, made at the request's end
from the times its RequestRecord holds. Every batch the model runs for a traced request is a
span of its own, `batch`, with the batch size, linked to the span of every request it served;
each request's `infer` span links back to its batch. The request span is started when the
request reaches the batcher (the batch links to it), or at its end when it never did.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util.types import Attributes

from app import __version__
from app.observability.request import RequestRecord
from app.observability.trace_settings import TraceSettings

log = logging.getLogger(__name__)

MODEL = "resnet_serve.model"
VERSION = "resnet_serve.model_version"
REQUEST_ID = "resnet_serve.request_id"
IMAGES = "resnet_serve.images"
BATCH_SIZE = "resnet_serve.batch_size"
BATCH_REQUESTS = "resnet_serve.batch_requests"
CHILDREN = ("read", "decode", "queue", "infer", "postprocess")


class SettingsSampler(Sampler):
    """The sampler TraceSettings steer (Triton's trace settings, OTEL_TRACES_SAMPLER):
    a request's span by its model's rule (and its caller's flag when parent-based); a child
    as its parent; a batch when any request it links to is sampled."""

    def __init__(self, settings: TraceSettings) -> None:
        self.settings = settings

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if parent.is_valid and not parent.is_remote:
            sampled = parent.trace_flags.sampled
        elif attributes is not None and BATCH_SIZE in attributes:
            sampled = any(link.context.trace_flags.sampled for link in links or ())
        else:
            model = attributes.get(MODEL) if attributes is not None else None
            sampled = self.settings.decide(
                model if isinstance(model, str) else None,
                parent.trace_flags.sampled if parent.is_valid else None,
            )
        return SamplingResult(
            Decision.RECORD_AND_SAMPLE if sampled else Decision.DROP,
            attributes if sampled else None,
            parent.trace_state if parent.is_valid else trace_state,
        )

    def get_description(self) -> str:
        return "TritonTraceSettings"


class Tracing:
    def __init__(self, settings: TraceSettings, exporter: SpanExporter | None = None) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        self.settings = settings
        resource = Resource.create()
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": "resnet-serve"}))
        self.provider = TracerProvider(sampler=SettingsSampler(settings), resource=resource)
        # OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _HEADERS, _TIMEOUT and OTEL_BSP_* are read by
        # the exporter and the processor themselves
        self.provider.add_span_processor(BatchSpanProcessor(exporter or OTLPSpanExporter()))
        self.tracer = self.provider.get_tracer("resnet_serve", __version__)
        # perf_counter_ns (the records' clock) -> ns since the epoch (the spans')
        self.offset_ns = time.time_ns() - time.perf_counter_ns()

    def shutdown(self) -> None:
        """Send what is buffered, then stop the exporter's thread."""
        self.provider.shutdown()

    def _epoch(self, perf_ns: int) -> int:
        return perf_ns + self.offset_ns

    # ------------------------------------------------------------------ requests
    def start_request(self, record: RequestRecord) -> None:
        """The request's span, from its arrival, under its caller's trace if it has one."""
        context: Context | None = None
        if record.parent is not None:
            trace_id, span_id, flags = record.parent
            state = TraceState.from_header([record.tracestate]) if record.tracestate else None
            caller = SpanContext(
                trace_id,
                span_id,
                is_remote=True,
                trace_flags=TraceFlags(flags & TraceFlags.SAMPLED),
                trace_state=state,
            )
            context = trace.set_span_in_context(NonRecordingSpan(caller))
        else:
            context = Context()  # a root: never a span that happens to be current here
        attributes: dict[str, Any] = {REQUEST_ID: record.request_id}
        if record.model is not None:
            attributes[MODEL] = record.model
        record.span = self.tracer.start_span(
            record.endpoint or "request",
            context=context,
            kind=SpanKind.SERVER,
            attributes=attributes,
            start_time=self._epoch(record.start_ns),
        )

    def finish_request(
        self, record: RequestRecord, name: str, attributes: Mapping[str, Any]
    ) -> None:
        """End the request's span, with a child per phase it reached. Only inference requests
        (record.endpoint set) are traced: probes and metadata calls would flood the store."""
        if record.span is None:
            if record.endpoint is None:
                return
            self.start_request(record)
        span = record.span
        if not span.is_recording():
            return
        span.update_name(name)
        span.set_attributes({k: v for k, v in attributes.items() if v is not None})
        if record.model is not None:
            span.set_attribute(MODEL, record.model)
        if record.version is not None:
            span.set_attribute(VERSION, record.version)
        span.set_attribute(IMAGES, record.images)
        bounds = record.boundaries()
        decode, queue, infer, post = record.ran()
        parent = trace.set_span_in_context(span)
        reached_all = (True, decode, queue, infer, post)
        for i, (child, reached) in enumerate(zip(CHILDREN, reached_all, strict=True)):
            if not reached:
                continue
            links: list[Link] = []
            child_attributes: dict[str, Any] = {}
            if child == "infer":
                links = [Link(c) for c in record.batch_spans or ()]
                child_attributes[BATCH_SIZE] = record.batch_size
            s = self.tracer.start_span(
                child,
                context=parent,
                links=links,
                attributes=child_attributes or None,
                start_time=self._epoch(bounds[i]),
            )
            s.end(end_time=self._epoch(bounds[i + 1]))
        if record.error is not None:
            span.set_status(Status(StatusCode.ERROR, record.error))
        span.end(end_time=self._epoch(record.end_ns or record.respond_ns or time.perf_counter_ns()))

    # ------------------------------------------------------------------ batches
    def batch(
        self,
        model: str,
        records: Sequence[RequestRecord],
        start_ns: int,
        end_ns: int,
        size: int,
        failed: bool,
    ) -> SpanContext | None:
        """The span of one batch, linked to every sampled request it served (None when it
        served none: the batch is then not traced either)."""
        links: list[Link] = []
        seen: set[int] = set()
        for r in records:
            if r.span is None or id(r) in seen:  # a request split over chunks links once
                continue
            seen.add(id(r))
            context = r.span.get_span_context()
            if context.trace_flags.sampled:
                links.append(Link(context))
        if not links:
            return None
        span = self.tracer.start_span(
            "batch",
            context=Context(),
            kind=SpanKind.INTERNAL,
            links=links,
            attributes={MODEL: model, BATCH_SIZE: size, BATCH_REQUESTS: len(seen)},
            start_time=self._epoch(start_ns),
        )
        if failed:
            span.set_status(Status(StatusCode.ERROR, "the batch failed"))
        span.end(end_time=self._epoch(end_ns))
        context = span.get_span_context()
        return context if context.trace_flags.sampled else None
