"""Live statistics for the status page, computed by the server from its own Prometheus
collectors: no Prometheus server needed.

A StatsSampler reads the same registry /metrics exposes (every worker aggregated when several
share the port, through prometheus-client's multiprocess files; this process alone otherwise)
every `interval_s` and keeps the cumulative figures of the last `window_s` in a ring buffer.
`report()` turns consecutive samples into rates (requests/s, images/s, errors/s), latency
quantiles (p50/p99 from the request-duration histogram's bucket deltas, interpolated within a
bucket as Prometheus's histogram_quantile does), queue depth and in-flight gauges, and batch
sizes, per model and for all models together.

It never touches the request path: a request costs exactly what it cost before (its counters
and histograms are updated whether or not anyone reads them); the sampler reads them on its
own schedule, off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from app.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, PREFIX, Metrics

log = logging.getLogger(__name__)

ALL = "*"  # the key of every model together
_REQUESTS = f"{PREFIX}_requests_total"
_IMAGES = f"{PREFIX}_images_total"
_DURATION = f"{PREFIX}_request_duration_seconds"
_BATCH = f"{PREFIX}_batch_size"
_QUEUE = f"{PREFIX}_queue_depth"
_IN_FLIGHT = f"{PREFIX}_requests_in_flight"
_LATENCY_BOUNDS = (*LATENCY_BUCKETS, math.inf)
_BATCH_BOUNDS = (*(float(b) for b in BATCH_BUCKETS), math.inf)


@dataclass
class Counters:
    """One model's cumulative figures at one instant (gauges: their value then)."""

    requests: float = 0.0
    errors: float = 0.0  # answered with a status >= 400
    images: float = 0.0
    latency: list[float] = field(default_factory=lambda: [0.0] * len(_LATENCY_BOUNDS))
    batches: list[float] = field(default_factory=lambda: [0.0] * len(_BATCH_BOUNDS))
    batch_sum: float = 0.0
    queue_depth: float = 0.0
    in_flight: float = 0.0

    def add(self, other: Counters) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.images += other.images
        self.latency = [a + b for a, b in zip(self.latency, other.latency, strict=True)]
        self.batches = [a + b for a, b in zip(self.batches, other.batches, strict=True)]
        self.batch_sum += other.batch_sum
        self.queue_depth += other.queue_depth
        self.in_flight += other.in_flight


@dataclass
class Sample:
    wall: float  # time.time(), for the page's clock
    mono: float  # time.monotonic(), for rates
    models: dict[str, Counters]


def read_counters(families: Iterable[Any]) -> dict[str, Counters]:
    """Per-model figures from collected metric families (CollectorRegistry.collect())."""
    out: dict[str, Counters] = {}
    for family in families:
        for s in family.samples:
            model = s.labels.get("model")
            if model is None:
                continue
            c = out.get(model)
            if c is None:
                c = out[model] = Counters()
            name, value = s.name, float(s.value)
            if name == _REQUESTS:
                c.requests += value
                if int(s.labels.get("code", "0")) >= 400:
                    c.errors += value
            elif name == _IMAGES:
                c.images += value
            elif name == f"{_DURATION}_bucket":
                c.latency[_bound_index(_LATENCY_BOUNDS, s.labels["le"])] += value
            elif name == f"{_BATCH}_bucket":
                c.batches[_bound_index(_BATCH_BOUNDS, s.labels["le"])] += value
            elif name == f"{_BATCH}_sum":
                c.batch_sum += value
            elif name == _QUEUE:
                c.queue_depth += value
            elif name == _IN_FLIGHT:
                c.in_flight += value
    return out


def _bound_index(bounds: tuple[float, ...], le: str) -> int:
    value = float(le)
    for i, bound in enumerate(bounds):
        if math.isclose(bound, value) or bound == value:
            return i
    raise ValueError(f"bucket bound {le} is not one of {bounds}")


def quantile(q: float, bounds: tuple[float, ...], cumulative: list[float]) -> float | None:
    """Prometheus's histogram_quantile over cumulative bucket counts; None without data."""
    total = cumulative[-1]
    if total <= 0:
        return None
    rank = q * total
    previous_count, lower = 0.0, 0.0
    for bound, count in zip(bounds, cumulative, strict=True):
        if count >= rank:
            if math.isinf(bound):  # in the +Inf bucket: the highest finite bound
                return lower
            in_bucket = count - previous_count
            if in_bucket <= 0:
                return bound
            return lower + (bound - lower) * (rank - previous_count) / in_bucket
        previous_count, lower = count, bound
    return lower


def _delta(new: Counters, old: Counters | None) -> Counters:
    """new - old; a counter that went down (a restarted worker's files gone) counts from 0."""
    if old is None:
        return new

    def d(a: float, b: float) -> float:
        return a - b if a >= b else a

    return Counters(
        requests=d(new.requests, old.requests),
        errors=d(new.errors, old.errors),
        images=d(new.images, old.images),
        latency=[d(a, b) for a, b in zip(new.latency, old.latency, strict=True)],
        batches=[d(a, b) for a, b in zip(new.batches, old.batches, strict=True)],
        batch_sum=d(new.batch_sum, old.batch_sum),
        queue_depth=new.queue_depth,
        in_flight=new.in_flight,
    )


def _with_total(models: dict[str, Counters]) -> dict[str, Counters]:
    total = Counters()
    for c in models.values():
        total.add(c)
    return {ALL: total, **models}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def batch_size_labels() -> list[str]:
    """The batch-size histogram's buckets as sizes: 1, 2, 3-4, 5-8, ..., >256."""
    labels, lower = [], 0
    for bound in BATCH_BUCKETS:
        labels.append(str(bound) if bound == lower + 1 else f"{lower + 1}-{bound}")
        lower = bound
    return [*labels, f">{BATCH_BUCKETS[-1]}"]


class StatsSampler:
    """Samples the metrics every `interval_s`, keeps `window_s` of them, reports as JSON."""

    def __init__(self, metrics: Metrics, interval_s: float = 2.0, window_s: float = 600.0) -> None:
        self.metrics = metrics
        self.interval_s = interval_s
        self.window_s = window_s
        self.samples: deque[Sample] = deque(maxlen=max(2, int(window_s / interval_s) + 1))
        self._task: asyncio.Task[None] | None = None
        self._report: tuple[int, dict[str, Any]] | None = None  # (samples taken, report)
        self.taken = 0

    @property
    def aggregate(self) -> bool:
        """Whether the figures are every worker's (multiprocess mode) or this process's."""
        return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

    def _registry(self) -> CollectorRegistry:
        if self.aggregate:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return registry
        return self.metrics.registry

    def sample(self) -> Sample:
        """Read the collectors once and keep the result (thread-safe enough: appends only)."""
        models = read_counters(self._registry().collect())
        taken = Sample(time.time(), time.monotonic(), models)
        self.samples.append(taken)
        self.taken += 1
        return taken

    # ------------------------------------------------------------------ the background task
    def start(self) -> None:
        self.sample()  # the window starts here
        self._task = asyncio.get_running_loop().create_task(self._run(), name="stats-sampler")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await asyncio.to_thread(self.sample)  # the multiprocess files are read off-loop
            except Exception:  # never let the page's figures take the server down
                log.exception("stats sampler: reading the metrics failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    # ------------------------------------------------------------------ the report
    def report(self) -> dict[str, Any]:
        """Series and window summary; computed once per sample, however many pages poll."""
        cached = self._report
        if cached is not None and cached[0] == self.taken:
            return cached[1]
        taken = self.taken
        report = self._build(list(self.samples))
        self._report = (taken, report)
        return report

    def _build(self, samples: list[Sample]) -> dict[str, Any]:
        names = sorted({name for s in samples for name in s.models})
        totals = [_with_total(s.models) for s in samples]
        series: dict[str, dict[str, list[float | None]]] = {}
        for key in [ALL, *names]:
            rows: dict[str, list[float | None]] = {
                k: []
                for k in (
                    "requests_per_s",
                    "images_per_s",
                    "errors_per_s",
                    "p50_ms",
                    "p99_ms",
                    "queue_depth",
                    "in_flight",
                    "mean_batch",
                )
            }
            for i in range(1, len(samples)):
                dt = samples[i].mono - samples[i - 1].mono
                new = totals[i].get(key, Counters())
                d = _delta(new, totals[i - 1].get(key))
                per_s = 1.0 / dt if dt > 0 else 0.0
                batches = d.batches[-1]
                rows["requests_per_s"].append(round(d.requests * per_s, 3))
                rows["images_per_s"].append(round(d.images * per_s, 3))
                rows["errors_per_s"].append(round(d.errors * per_s, 3))
                rows["p50_ms"].append(_ms(quantile(0.5, _LATENCY_BOUNDS, d.latency)))
                rows["p99_ms"].append(_ms(quantile(0.99, _LATENCY_BOUNDS, d.latency)))
                rows["queue_depth"].append(d.queue_depth)
                rows["in_flight"].append(d.in_flight)
                rows["mean_batch"].append(round(d.batch_sum / batches, 3) if batches else None)
            series[key] = rows
        window: dict[str, dict[str, Any]] = {}
        for key in [ALL, *names]:
            first = totals[0].get(key) if totals else None
            last = totals[-1].get(key, Counters()) if totals else Counters()
            d = _delta(last, first) if len(samples) > 1 else Counters()
            per_bucket = [d.batches[0]] + [
                d.batches[i] - d.batches[i - 1] for i in range(1, len(d.batches))
            ]
            batches = d.batches[-1]
            window[key] = {
                "requests": d.requests,
                "errors": d.errors,
                "images": d.images,
                "p50_ms": _ms(quantile(0.5, _LATENCY_BOUNDS, d.latency)),
                "p99_ms": _ms(quantile(0.99, _LATENCY_BOUNDS, d.latency)),
                "batches": batches,
                "mean_batch": round(d.batch_sum / batches, 3) if batches else None,
                "batch_sizes": dict(zip(batch_size_labels(), per_bucket, strict=True)),
            }
        return {
            "interval_s": self.interval_s,
            "window_s": self.window_s,
            "source": "all workers" if self.aggregate else "this process",
            "pid": os.getpid(),
            "now": samples[-1].wall if samples else time.time(),
            "span_s": round(samples[-1].mono - samples[0].mono, 3) if len(samples) > 1 else 0.0,
            "models": names,
            "t": [round(s.wall, 3) for s in samples[1:]],
            "series": series,
            "window": window,
        }
