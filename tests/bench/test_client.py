"""The load generator against a stub server that counts exactly what it received."""

from __future__ import annotations

import pytest

from app.bench.client import LoadGenerator
from app.bench.stats import Step
from tests.bench.stub_server import Reply, StubServer

REQUESTS = [
    b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    for body in (b"first", b"second", b"third")
]


async def started(rule) -> StubServer:
    return await StubServer(rule).start()


async def test_closed_loop_counts_every_status_and_survives_closed_connections() -> None:
    sent: dict[int, int] = {}

    def rule(n: int, head: bytes, body: bytes) -> Reply:
        status = 503 if n % 5 == 4 else 200
        sent[status] = sent.get(status, 0) + 1
        return Reply(
            status,
            b'{"error":"queue is full"}' if status == 503 else b"{}",
            chunked=n % 3 == 0,
            close=n % 7 == 6,
        )

    server = await started(rule)
    try:
        gen = LoadGenerator("127.0.0.1", server.port, REQUESTS, images_per_request=2)
        step = await gen.closed_loop(4, count=40)
    finally:
        await server.stop()
    assert server.received == 40
    assert step.requests == 40
    assert step.ok == sent[200] == 32
    assert dict(step.errors) == {"503": sent[503]} == {"503": 8}
    assert "queue is full" in step.error_samples["503"]  # chunked body reassembled
    assert server.connections > 4  # "Connection: close" answers made it reconnect
    # every pre-built request was sent, in turn
    assert set(server.bodies.values()) <= {13, 14} and len(server.bodies) == 3
    s = step.summary()
    assert s["images_per_s"] == pytest.approx(2 * s["ok_per_s"])
    assert s["p50_ms"] is not None and s["p50_ms"] > 0


async def test_closed_loop_duration_window() -> None:
    server = await started(lambda n, h, b: Reply(delay=0.01))
    try:
        step = await LoadGenerator("127.0.0.1", server.port, REQUESTS).closed_loop(
            2, duration=0.5, warmup=0.2
        )
    finally:
        await server.stop()
    assert step.elapsed == 0.5
    assert 10 < step.ok < server.received  # warm-up answers are not counted
    assert min(step.latencies) >= 0.01


async def test_closed_loop_counts_answers_in_the_window_whenever_sent() -> None:
    """Latency (0.6 s) close to the window (0.8 s): the answers arriving in the window are the
    throughput, though their requests were sent during the warm-up."""
    server = await started(lambda n, h, b: Reply(delay=0.6))
    try:
        step = await LoadGenerator("127.0.0.1", server.port, REQUESTS).closed_loop(
            4, duration=0.8, warmup=0.1
        )
    finally:
        await server.stop()
    assert step.ok == 4 and step.elapsed == 0.8
    assert min(step.latencies) >= 0.6


async def test_open_loop_counts_queueing_in_latency() -> None:
    """200 requests/s offered to 2 connections served in 50 ms each (40/s): the wait for a
    connection must show in the latency (no coordinated omission)."""
    server = await started(lambda n, h, b: Reply(delay=0.05))
    try:
        gen = LoadGenerator("127.0.0.1", server.port, REQUESTS)
        step = await gen.open_loop(200.0, count=40, max_connections=2)
    finally:
        await server.stop()
    assert step.requests == step.ok == 40 == server.received
    assert min(step.latencies) >= 0.05
    # 40 arrivals in ~0.2 s, served 2 at a time in 50 ms: the last waits ~0.8 s
    assert max(step.latencies) > 0.5


async def test_open_loop_rate_is_kept_when_the_server_keeps_up() -> None:
    server = await started(lambda n, h, b: Reply())
    try:
        step = await LoadGenerator("127.0.0.1", server.port, REQUESTS).open_loop(
            100.0, duration=1.0, seed=1
        )
    finally:
        await server.stop()
    assert 60 <= step.ok <= 140  # Poisson: 100 expected, sd 10
    assert step.elapsed == pytest.approx(1.0, abs=0.2)
    assert step.summary()["offered_per_s"] == pytest.approx(step.ok / step.elapsed)


async def test_timeouts_are_counted_as_errors() -> None:
    server = await started(lambda n, h, b: Reply(delay=1.0))
    try:
        gen = LoadGenerator("127.0.0.1", server.port, REQUESTS, timeout=0.1)
        step = await gen.closed_loop(1, count=2)
    finally:
        await server.stop()
    assert step.ok == 0
    assert dict(step.errors) == {"timeout": 2}


async def test_nothing_listening_fails_before_any_step() -> None:
    server = await started(lambda n, h, b: Reply())
    port = server.port
    await server.stop()
    with pytest.raises(ConnectionRefusedError):
        await LoadGenerator("127.0.0.1", port, REQUESTS).check()


def test_step_percentiles() -> None:
    step = Step("closed", concurrency=1)
    for ms in range(1, 1001):
        step.record_ok(ms / 1000)
    step.record_error("404", "x" * 1000)
    step.elapsed = 10.0
    s = step.summary()
    assert s["p50_ms"] == pytest.approx(500.5)
    assert s["p99_ms"] == pytest.approx(990.01)
    assert s["p99_9_ms"] == pytest.approx(999.001)
    assert s["requests"] == 1001 and s["ok"] == 1000 and s["errors"] == {"404": 1}
    assert s["ok_per_s"] == 100.0 and s["requests_per_s"] == 100.1
    assert len(s["error_samples"]["404"]) == 300
