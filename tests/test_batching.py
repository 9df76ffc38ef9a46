"""DynamicBatcher with the fake backend: batch sizes, own rows, errors, limits, deadlines."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from app.backends import create_backend
from app.batching import DynamicBatcher
from app.config import BatchingConfig
from app.errors import DeadlineExceeded, InferenceError, ModelNotReady, QueueFull
from app.metrics import Metrics
from tests.fakes import Behaviour, FakeBackend, expected_logits, fake_config


def images(value: int, n: int = 1, size: int = 224) -> np.ndarray:
    return np.full((n, size, size, 3), value, np.uint8)


def make(
    name: str = "fake",
    instances: int = 1,
    delay: float = 0.0,
    hold: bool = False,
    **batching: object,
):
    """A batcher over fake instances; hold=True: every batch waits for behaviour.hold.set()."""
    cfg = fake_config(name, batching=BatchingConfig(instances=instances, **batching))
    FakeBackend.behaviour[name] = Behaviour(delay_s=delay, hold=threading.Event() if hold else None)
    backends = [create_backend(cfg) for _ in range(instances)]
    metrics = Metrics()
    batcher = DynamicBatcher(name, backends, cfg.batching, metrics.for_model(name))
    return batcher, FakeBackend.behaviour[name], metrics


def far() -> float:
    return time.monotonic() + 30


async def running(behaviour: Behaviour, n: int = 1) -> None:
    """Wait until `n` batches are inside the backend (event ordering, not a guessed sleep)."""
    for _ in range(5000):
        if behaviour.concurrent >= n:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"{behaviour.concurrent} batches running, expected {n}")


def release(behaviour: Behaviour) -> None:
    assert behaviour.hold is not None
    behaviour.hold.set()


def test_bucket_sizes() -> None:
    def sizes(n: int) -> list[int]:
        return BatchingConfig(max_batch_size=n).bucket_sizes()

    assert sizes(1) == [1]
    assert sizes(8) == [1, 2, 4, 8]
    assert sizes(12) == [1, 2, 4, 8, 12]
    assert BatchingConfig(max_batch_size=8).bucket_for(3) == 4
    assert BatchingConfig(max_batch_size=12).bucket_for(9) == 12


async def test_concurrent_requests_form_batches_and_get_their_own_rows() -> None:
    batcher, behaviour, metrics = make(max_batch_size=8, hold=True)
    batcher.start()
    # the first request runs alone (the instance was idle); the 16 that arrive while it runs
    # are taken 8 at a time
    first = batcher.submit(images(200), far())
    await running(behaviour)
    rest = [batcher.submit(images(v), far()) for v in range(16)]
    release(behaviour)
    results = await asyncio.gather(first, *rest)
    assert behaviour.batches == [1, 8, 8]
    for value, rows in zip([200, *range(16)], results, strict=True):
        assert rows.shape == (1, 256)
        np.testing.assert_array_equal(rows, expected_logits(images(value), 256))
    await batcher.close()
    assert (
        metrics.registry.get_sample_value("resnet_serve_batch_size_count", {"model": "fake"}) == 3
    )


async def test_requests_are_never_split_or_reordered() -> None:
    batcher, behaviour, _ = make(max_batch_size=8, hold=True)
    batcher.start()
    blocker = batcher.submit(images(1), far())
    await running(behaviour)
    a = batcher.submit(images(10, 5), far())
    b = batcher.submit(images(20, 5), far())  # does not fit beside a: next batch
    c = batcher.submit(images(30, 3), far())
    release(behaviour)
    ra, rb, rc = await asyncio.gather(a, b, c)
    await blocker
    assert behaviour.batches == [1, 5, 8]
    assert ra.shape == (5, 256) and rb.shape == (5, 256) and rc.shape == (3, 256)
    assert int(np.argmax(rb[0])) == 20 and int(np.argmax(rc[2])) == 30
    await batcher.close()


async def test_a_request_larger_than_max_batch_is_chunked_and_reassembled() -> None:
    batcher, behaviour, _ = make(max_batch_size=4)
    batcher.start()
    batch = np.concatenate([images(v) for v in range(10)])
    rows = await batcher.submit(batch, far())
    assert rows.shape == (10, 256)
    assert [int(np.argmax(r)) for r in rows] == list(range(10))
    assert sorted(behaviour.batches, reverse=True) == [4, 4, 2]
    await batcher.close()


async def test_backend_failure_fails_only_its_batch() -> None:
    batcher, behaviour, metrics = make(max_batch_size=2, hold=True)
    behaviour.fail = lambda batch: bool((batch == 66).any())
    batcher.start()
    first = batcher.submit(images(1), far())
    await running(behaviour)
    same_batch = [batcher.submit(images(66), far()), batcher.submit(images(7), far())]
    later = batcher.submit(images(8), far())
    release(behaviour)
    got = await asyncio.gather(first, *same_batch, later, return_exceptions=True)
    assert behaviour.batches == [1, 2, 1]
    assert isinstance(got[0], np.ndarray)
    assert isinstance(got[1], InferenceError) and isinstance(got[2], InferenceError)
    assert "fake backend failure" in got[1].message
    assert isinstance(got[3], np.ndarray) and int(np.argmax(got[3][0])) == 8
    assert (
        metrics.registry.get_sample_value(
            "resnet_serve_inference_failures_total", {"model": "fake"}
        )
        == 1
    )
    await batcher.close()


async def test_full_queue_rejects_at_once_and_recovers() -> None:
    batcher, _, metrics = make(max_batch_size=1, max_queue_size=3, delay=0.05)
    batcher.start()
    accepted = [batcher.submit(images(i), far()) for i in range(3)]
    with pytest.raises(QueueFull) as info:  # raised by submit itself: refused, never queued
        batcher.submit(images(9), far())
    assert batcher.queue_depth == 3
    assert info.value.retry_after_s >= 1
    assert len(await asyncio.gather(*accepted)) == 3  # accepted work still completes
    assert (await batcher.submit(images(5), far())).shape == (1, 256)  # recovered
    assert (
        metrics.registry.get_sample_value(
            "resnet_serve_rejected_total", {"model": "fake", "reason": "queue_full"}
        )
        == 1
    )
    await batcher.close()


async def test_expired_and_cancelled_requests_cost_no_inference() -> None:
    batcher, behaviour, _ = make(max_batch_size=1, hold=True)
    batcher.start()
    first = batcher.submit(images(1), far())
    await running(behaviour)
    expired = batcher.submit(images(2), time.monotonic() + 0.02)
    gone = batcher.submit(images(3), far())
    gone.cancel()
    await asyncio.sleep(0.05)  # past the deadline while the instance is still busy
    release(behaviour)
    await first
    with pytest.raises(DeadlineExceeded):
        await expired
    await batcher.close()
    assert behaviour.batches == [1]  # neither the expired nor the cancelled one ran


async def test_instances_run_in_parallel() -> None:
    batcher, behaviour, _ = make(instances=2, max_batch_size=1, hold=True)
    batcher.start()
    pending = [batcher.submit(images(i), far()) for i in range(4)]
    await running(behaviour, 2)  # both instances inside infer at once
    release(behaviour)
    await asyncio.gather(*pending)
    assert behaviour.max_concurrent == 2 and behaviour.batches == [1, 1, 1, 1]
    await batcher.close()


async def test_queue_delay_waits_for_a_fuller_batch() -> None:
    # 300 ms of queue delay against 20 ms between the requests: a margin for a loaded machine
    batcher, behaviour, _ = make(max_batch_size=4, max_queue_delay_ms=300)
    batcher.start()
    first = batcher.submit(images(1), far())
    await asyncio.sleep(0.02)
    second = batcher.submit(images(2), far())
    await asyncio.gather(first, second)
    assert behaviour.batches == [2]
    await batcher.close()


async def test_close_drains_accepted_work_and_then_refuses() -> None:
    batcher, behaviour, _ = make(max_batch_size=2, delay=0.05)
    batcher.start()
    pending = [batcher.submit(images(i), far()) for i in range(5)]
    await batcher.close()
    assert all(f.done() for f in pending)
    assert sum(behaviour.batches) == 5
    with pytest.raises(ModelNotReady):
        batcher.submit(images(1), far())


async def test_padding_to_buckets() -> None:
    cfg = fake_config("pad", batching=BatchingConfig(max_batch_size=8))
    behaviour = FakeBackend.behaviour["pad"] = Behaviour(hold=threading.Event())
    metrics = Metrics()
    batcher = DynamicBatcher(
        "pad", [create_backend(cfg)], cfg.batching, metrics.for_model("pad"), pad_to_bucket=True
    )
    batcher.start()
    first = batcher.submit(images(1), far())
    await running(behaviour)
    pending = [batcher.submit(images(v), far()) for v in (3, 4, 5)]
    release(behaviour)
    rows = await asyncio.gather(*pending)
    await first
    assert behaviour.batches == [1, 4]  # 3 images padded to the bucket 4
    assert [int(np.argmax(r[0])) for r in rows] == [3, 4, 5]
    await batcher.close()


async def test_abandoned_requests_do_not_fill_the_queue() -> None:
    batcher, behaviour, _ = make(max_batch_size=1, max_queue_size=3, hold=True)
    batcher.start()
    first = batcher.submit(images(1), far())
    await running(behaviour)
    abandoned = [batcher.submit(images(2), far()) for _ in range(3)]
    for f in abandoned:
        f.cancel()
    live = batcher.submit(images(3), far())  # room again: the abandoned ones are purged
    release(behaviour)
    await asyncio.gather(first, live)
    await batcher.close()
    assert behaviour.batches == [1, 1]


async def test_close_does_not_wait_for_a_stuck_call() -> None:
    cfg = fake_config("stuck", batching=BatchingConfig(max_batch_size=1, infer_timeout_s=0.1))
    stuck = FakeBackend.behaviour["stuck"] = Behaviour(delay_s=2.0)
    metrics = Metrics()
    batcher = DynamicBatcher(
        "stuck", [create_backend(cfg)], cfg.batching, metrics.for_model("stuck")
    )
    batcher.start()
    with pytest.raises(InferenceError, match="did not finish"):
        await batcher.submit(images(1), far())
    assert not batcher.healthy
    await asyncio.wait_for(batcher.drain(), 10)  # answered already: nothing to wait for
    assert stuck.concurrent == 1  # drained while the stuck call still runs
    await batcher.close()  # shuts the executor down after the call returns
