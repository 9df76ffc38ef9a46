"""The status page's figures (app/stats.py): rates, quantiles and batch sizes computed from the
server's own collectors, checked against figures worked out by hand."""

from __future__ import annotations

import asyncio
import math

import pytest

from app.metrics import LATENCY_BUCKETS, Metrics
from app.stats import ALL, StatsSampler, batch_size_labels, quantile

BOUNDS = (*LATENCY_BUCKETS, math.inf)


def cumulative(observations: list[float]) -> list[float]:
    return [float(sum(1 for o in observations if o <= b)) for b in BOUNDS]


def test_quantile_interpolates_within_a_bucket_as_prometheus_does() -> None:
    # 10 observations in (0.01, 0.025]: the p50 rank (5) is half-way through that bucket
    counts = cumulative([0.02] * 10)
    assert quantile(0.5, BOUNDS, counts) == pytest.approx(0.01 + 0.015 * 0.5)
    # 90 fast and 10 slow: p99 falls in the slow ones' bucket (0.25, 0.5], 9/10 of the way
    counts = cumulative([0.001] * 90 + [0.3] * 10)
    assert quantile(0.99, BOUNDS, counts) == pytest.approx(0.25 + 0.25 * 0.9)
    assert quantile(0.5, BOUNDS, counts) == pytest.approx(0.0005 + 0.0005 * 50 / 90)
    # in the +Inf bucket: the highest finite bound, as histogram_quantile answers
    assert quantile(0.99, BOUNDS, cumulative([20.0] * 5)) == 10.0
    assert quantile(0.5, BOUNDS, cumulative([])) is None


def test_batch_size_labels_name_each_bucket() -> None:
    assert batch_size_labels()[:5] == ["1", "2", "3-4", "5-8", "9-16"]
    assert batch_size_labels()[-1] == ">256"


def observe(metrics: Metrics, model: str, seconds: float, code: int = 200) -> None:
    telemetry = metrics.for_model(model)
    telemetry.request_done("classify", code, seconds)


def test_report_gives_rates_quantiles_and_batches_per_model_and_in_all() -> None:
    metrics = Metrics()
    sampler = StatsSampler(metrics, interval_s=2.0, window_s=60.0)
    a, b = metrics.for_model("a"), metrics.for_model("b")
    sampler.sample()
    for _ in range(8):
        a.request_done("classify", 200, 0.02)
    a.request_done("classify", 415, 0.001)
    a.request_done("v2_infer", 503, 0.001)
    b.request_done("classify", 200, 0.3)
    a.batch_done(4, [1_000_000] * 2, 0, 5_000_000, 0, 0)
    a.batch_done(1, [1_000_000], 0, 5_000_000, 0, 0)
    b.batch_done(8, [0], 0, 9_000_000, 0, 0)
    a.queue_depth.set(3)
    b.in_flight.inc()
    sampler.sample()
    dt = sampler.samples[1].mono - sampler.samples[0].mono
    report = sampler.report()

    assert report["models"] == ["a", "b"]
    assert report["source"] == "this process"
    assert len(report["t"]) == 1
    sa, sall = report["series"]["a"], report["series"][ALL]
    assert sa["requests_per_s"][0] == pytest.approx(10 / dt, rel=1e-3)
    assert sa["errors_per_s"][0] == pytest.approx(2 / dt, rel=1e-3)
    assert sa["images_per_s"][0] == pytest.approx(5 / dt, rel=1e-3)
    assert sall["requests_per_s"][0] == pytest.approx(11 / dt, rel=1e-3)
    assert sa["queue_depth"] == [3.0] and sall["in_flight"] == [1.0]
    assert sa["mean_batch"] == [2.5] and sall["mean_batch"] == [pytest.approx(13 / 3, abs=1e-3)]

    window = report["window"]
    assert window["a"]["requests"] == 10 and window["a"]["errors"] == 2
    assert window[ALL]["requests"] == 11 and window[ALL]["images"] == 13
    expected = quantile(0.5, BOUNDS, cumulative([0.02] * 8 + [0.001] * 2))
    assert expected is not None
    assert window["a"]["p50_ms"] == pytest.approx(expected * 1000, abs=1e-3)
    expected = quantile(0.99, BOUNDS, cumulative([0.02] * 8 + [0.001] * 2 + [0.3]))
    assert expected is not None
    assert window[ALL]["p99_ms"] == pytest.approx(expected * 1000, abs=1e-3)
    sizes = window[ALL]["batch_sizes"]
    assert sizes["1"] == 1 and sizes["3-4"] == 1 and sizes["5-8"] == 1 and sum(sizes.values()) == 3
    assert window[ALL]["batches"] == 3


def test_quiet_intervals_have_no_latency_and_the_window_keeps_its_length() -> None:
    metrics = Metrics()
    sampler = StatsSampler(metrics, interval_s=1.0, window_s=3.0)
    observe(metrics, "m", 0.01)
    for _ in range(6):
        sampler.sample()
    report = sampler.report()
    assert len(sampler.samples) == 4  # window / interval + 1
    assert report["series"][ALL]["requests_per_s"] == [0.0, 0.0, 0.0]
    assert report["series"][ALL]["p99_ms"] == [None, None, None]
    assert report["window"][ALL]["requests"] == 0  # the request was before the window


def test_report_is_computed_once_per_sample() -> None:
    sampler = StatsSampler(Metrics())
    sampler.sample()
    sampler.sample()
    first = sampler.report()
    assert sampler.report() is first
    sampler.sample()
    assert sampler.report() is not first


async def test_the_task_samples_every_interval_and_stops() -> None:
    metrics = Metrics()
    sampler = StatsSampler(metrics, interval_s=0.05, window_s=10.0)
    sampler.start()
    await asyncio.sleep(0.3)
    await sampler.stop()
    taken = sampler.taken
    assert taken >= 3
    await asyncio.sleep(0.15)
    assert sampler.taken == taken
