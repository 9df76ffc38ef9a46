"""Prometheus metrics on an injected CollectorRegistry, plus the per-model statistics the KServe
V2 statistics extension reports. Both are fed from the same measurements (ModelTelemetry).

Histograms, not summaries: they aggregate across replicas into a fleet-wide p99.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from dataclasses import dataclass, field, replace

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PREFIX = "resnet_serve"


class Metrics:
    """Every collector the service exports, registered on the registry given."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.request_duration = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time from request received to response ready, by model and endpoint.",
            ["model", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            f"{PREFIX}_requests",
            "Requests answered, by model, endpoint and HTTP status.",
            ["model", "endpoint", "code"],
            registry=r,
        )
        self.queue_wait = Histogram(
            f"{PREFIX}_queue_wait_seconds",
            "Time a request waited in the batch queue.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.preprocess_duration = Histogram(
            f"{PREFIX}_preprocess_duration_seconds",
            "Decode + resize + crop time per image.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            f"{PREFIX}_inference_duration_seconds",
            "Backend time per batch.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            f"{PREFIX}_batch_size",
            "Images per batch run by the backend.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.images = Counter(
            f"{PREFIX}_images",
            "Images classified.",
            ["model"],
            registry=r,
        )
        self.inference_failures = Counter(
            f"{PREFIX}_inference_failures",
            "Batches the backend failed to run.",
            ["model"],
            registry=r,
        )
        self.rejected = Counter(
            f"{PREFIX}_rejected",
            "Requests not served, once each: queue_full, decode_queue_full, costly_queue_full "
            "(refused at once) or deadline (timed out).",
            ["model", "reason"],
            registry=r,
        )
        self.gpu_decode_fallbacks = Counter(
            f"{PREFIX}_gpu_decode_fallbacks",
            "Images a model with input.decode 'gpu' decoded on the CPU instead: decoder_failed "
            "(nvJPEG decoded no image of the batch) or image_rejected (nvJPEG rejected that "
            "image alone).",
            ["model", "reason"],
            registry=r,
        )
        self.queue_depth = Gauge(
            f"{PREFIX}_queue_depth",
            "Requests waiting in the batch queue.",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.in_flight = Gauge(
            f"{PREFIX}_requests_in_flight",
            "Requests being handled.",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.model_ready = Gauge(
            f"{PREFIX}_model_ready",
            "1 when the model is loaded and warmed up.",
            ["model"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.model_info = Gauge(
            f"{PREFIX}_model_info",
            "Backend, device and precision each model runs on.",
            ["model", "backend", "device", "precision"],
            registry=r,
            multiprocess_mode="livemax",
        )

        # connections (app/connections.py): per process, summed over workers
        self.open_connections = Gauge(
            f"{PREFIX}_open_connections",
            "Open client connections.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.connections_rejected = Counter(
            f"{PREFIX}_connections_rejected",
            "Connections refused with 503 because the process was at its connection cap.",
            registry=r,
        )

    def exposition(self) -> bytes:
        """Prometheus text: this process's registry, or, when several worker processes share
        the port (PROMETHEUS_MULTIPROC_DIR set), every live worker's values aggregated."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)

    def for_model(self, model: str, *, reset_ready: bool = True) -> ModelTelemetry:
        return ModelTelemetry(self, model, reset_ready=reset_ready)


@dataclass
class ModelStats:
    """Cumulative counts and nanoseconds in the shape of Triton's statistics extension.

    As Triton counts them: success/fail/queue/compute_* are per request, and every request of
    a batch is charged the whole batch's compute time; `batches` holds, per batch size,
    [executions, input ns, infer ns, output ns] summed once per batch."""

    success_count: int = 0
    fail_count: int = 0
    success_ns: int = 0
    fail_ns: int = 0
    queue_count: int = 0
    queue_ns: int = 0
    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0
    compute_count: int = 0
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    batches: dict[int, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0, 0]))


class ModelTelemetry:
    """One model version's view: the Prometheus children (labelled by model name, so every
    version of a name adds to the same series) and that version's V2 statistics (Triton keeps
    them per version), updated together. `reset_ready=False` for a further version of a name
    whose ready gauge is already published."""

    def __init__(self, metrics: Metrics, model: str, *, reset_ready: bool = True) -> None:
        self.model = model
        self.metrics = metrics
        self.stats = ModelStats()
        self._lock = threading.Lock()
        self.queue_wait = metrics.queue_wait.labels(model)
        self.preprocess = metrics.preprocess_duration.labels(model)
        self.inference = metrics.inference_duration.labels(model)
        self.batch_size = metrics.batch_size.labels(model)
        self.images = metrics.images.labels(model)
        self.failures = metrics.inference_failures.labels(model)
        self.queue_depth = metrics.queue_depth.labels(model)
        self.in_flight = metrics.in_flight.labels(model)
        self.ready = metrics.model_ready.labels(model)
        if reset_ready:
            self.ready.set(0)

    def set_info(self, backend: str, device: str, precision: str) -> None:
        self.metrics.model_info.labels(self.model, backend, device, precision).set(1)

    def rejected(self, reason: str) -> None:
        self.metrics.rejected.labels(self.model, reason).inc()

    def decode_fallback(self, reason: str, images: int) -> None:
        self.metrics.gpu_decode_fallbacks.labels(self.model, reason).inc(images)

    def request_done(self, endpoint: str, code: int, seconds: float) -> None:
        self.metrics.requests.labels(self.model, endpoint, str(code)).inc()
        self.metrics.request_duration.labels(self.model, endpoint).observe(seconds)
        ns = int(seconds * 1e9)
        with self._lock:
            if code < 400:
                self.stats.success_count += 1
                self.stats.success_ns += ns
            else:
                self.stats.fail_count += 1
                self.stats.fail_ns += ns

    def batch_done(
        self,
        images: int,
        queue_ns: list[int],
        input_ns: int,
        infer_ns: int,
        output_ns: int,
        now_ms: int,
    ) -> None:
        """One batch ran: `queue_ns` holds each request's wait in the queue."""
        for wait in queue_ns:
            self.queue_wait.observe(wait / 1e9)
        self.inference.observe((input_ns + infer_ns + output_ns) / 1e9)
        self.batch_size.observe(images)
        self.images.inc(images)
        with self._lock:
            s = self.stats
            s.queue_count += len(queue_ns)
            s.queue_ns += sum(queue_ns)
            requests = len(queue_ns)
            s.compute_count += requests
            s.compute_input_ns += input_ns * requests
            s.compute_infer_ns += infer_ns * requests
            s.compute_output_ns += output_ns * requests
            s.inference_count += images
            s.execution_count += 1
            s.last_inference_ms = now_ms
            entry = s.batches[images]
            entry[0] += 1
            entry[1] += input_ns
            entry[2] += infer_ns
            entry[3] += output_ns

    def snapshot(self) -> ModelStats:
        """A consistent copy of the statistics (the batch worker updates them meanwhile)."""
        with self._lock:
            copy = replace(self.stats, batches={})
            copy.batches.update({n: list(v) for n, v in self.stats.batches.items()})
        return copy

    def batch_failed(self) -> None:
        self.failures.inc()
