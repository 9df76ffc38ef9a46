"""The adaptive scheduler (issue 19) with fake runners whose timing the tests control: the core
budget is never exceeded, a lone batch runs wide, queued work is split over the instances, a
slow, stuck or failing batch in one mode does not stall the other, deadlines cut batches."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pytest

from app.batching import DynamicBatcher
from app.config import BatchingConfig, ModelConfig
from app.errors import InferenceError
from app.metrics import Metrics
from app.scheduling import (
    BucketTimes,
    CoreBudget,
    Schedule,
    Timings,
    first_difference,
    measure,
    narrow_batch,
    prefers_wide,
    timed,
    wide_batch_limit,
)
from tests.fakes import FakeBackend, expected_logits, fake_config

# ----------------------------------------------------------------------------- the policy
# one thread: a batch of b takes about b single-image times (ResNet-50 int8 on this CPU: 8
# images take 7.1 single-image times); all the cores: about half as long
NARROW = BucketTimes({1: 0.020, 2: 0.039, 4: 0.074, 8: 0.142})
WIDE = BucketTimes({1: 0.011, 2: 0.021, 4: 0.040, 8: 0.076})


def test_bucket_times_interpolate_and_cap() -> None:
    assert NARROW.time(1) == 0.020 and NARROW.time(3) == pytest.approx(0.0565)
    assert NARROW.time(16) == pytest.approx(0.284)  # the largest's time per image beyond it
    assert NARROW.cap(8) == 8 and NARROW.cap(4) == 4
    flat = BucketTimes({1: 0.050, 2: 0.100, 4: 0.200, 8: 0.399})  # batching saves nothing
    assert flat.cap(8) == 1
    # ... but for a model of a tenth of a millisecond, the server's own work per batch does
    tiny = BucketTimes({1: 0.0001, 2: 0.0002, 4: 0.0004, 8: 0.0008})
    assert tiny.cap(8) == 8 and tiny.cap(8, overhead=0.0) == 1
    # a noisy middle size does not hide a bigger one that saves time per image
    noisy = BucketTimes({1: 0.020, 2: 0.048, 4: 0.074, 8: 0.142})
    assert noisy.cap(8) == 8
    saturating = BucketTimes({1: 0.020, 2: 0.036, 4: 0.064, 8: 0.127, 16: 0.255})
    assert saturating.cap(16) == 4  # 8 and 16 save under 3 % per image over 4
    with pytest.raises(ValueError):
        BucketTimes({})


def test_a_backlog_runs_in_batches_of_the_best_size() -> None:
    assert NARROW.best(8) == 8 and NARROW.best(4) == 4
    saturating = BucketTimes({1: 0.020, 2: 0.036, 4: 0.064, 8: 0.127, 16: 0.255})
    assert saturating.best(16) == 8  # 16 costs more per image than 8; 4 costs 1.4 % more
    # ResNet-50 int8 on one AVX2 core (warm-up of 2026-12-04): 48 ms per image at every size
    flat = BucketTimes({1: 0.04807, 2: 0.09615, 4: 0.1923, 8: 0.38459})
    assert flat.best(8) == 1
    # a backlog: the cap rises to the best size, and no further (a bigger batch saves nothing
    # per image and holds all of its images until the last is done)
    assert narrow_batch(20, 2, [], flat, flat.cap(8), 8, flat.best(8)) == 1  # batching saves 0
    assert narrow_batch(20, 2, [], saturating, saturating.cap(16), 16, 8) == 8  # not 10
    assert narrow_batch(40, 2, [], saturating, saturating.cap(16), 16, 8) == 8
    assert narrow_batch(9, 2, [], saturating, saturating.cap(16), 16, 8) == 5  # its share of 9
    assert narrow_batch(6, 2, [], saturating, saturating.cap(16), 16, 8) == 3  # not a backlog
    assert narrow_batch(3, 1, [0.5], NARROW, 1, 8, NARROW.best(8)) == 3  # 8 saves: all of it
    assert narrow_batch(40, 2, [], NARROW, 4, 8, NARROW.best(8)) == 8  # never above the limit


def test_times_from_a_busy_warm_up_are_made_consistent() -> None:
    busy = BucketTimes({1: 0.099, 2: 0.416, 4: 0.169, 8: 0.250})  # measured, load average 3
    fixed = busy.plausible()
    assert fixed.seconds == pytest.approx({1: 0.099, 2: 0.169, 4: 0.169, 8: 0.250})
    sizes = fixed.sizes
    for a, b in zip(sizes, sizes[1:], strict=False):
        assert fixed.seconds[a] <= fixed.seconds[b]  # a bigger batch never takes less
        assert fixed.per_image(b) <= fixed.per_image(a)  # nor more per image
    assert NARROW.plausible() == NARROW  # a consistent measurement is kept as it is


def test_a_lone_batch_runs_wide_and_a_queue_runs_narrow() -> None:
    assert prefers_wide(1, 2, NARROW, 8, WIDE, 8)  # 11 ms on every core, not 20 on one
    assert prefers_wide(2, 2, NARROW, 8, WIDE, 8) is False  # two instances side by side: 20 ms
    assert prefers_wide(9, 2, NARROW, 8, WIDE, 8) is False  # more than one wide batch
    assert prefers_wide(0, 2, NARROW, 8, WIDE, 8) is False


def test_the_wide_runner_takes_what_would_leave_an_instance_idle() -> None:
    assert wide_batch_limit(0, 2, 8) == 1  # the default: a lone image on two instances
    assert wide_batch_limit(0, 4, 8) == 3
    assert wide_batch_limit(0, 1, 8) == 1
    assert wide_batch_limit(0, 16, 8) == 8  # never above max_batch_size
    assert wide_batch_limit(6, 2, 8) == 6  # batching.wide_max_batch, set
    assert wide_batch_limit(16, 2, 8) == 8


def test_the_queue_is_split_over_the_free_instances() -> None:
    assert narrow_batch(8, 2, [], NARROW, 8) == 4  # the old scheduler gave one instance all 8
    assert narrow_batch(3, 2, [], NARROW, 8) == 2
    assert narrow_batch(20, 2, [], NARROW, 8) == 8  # a backlog: full batches
    assert narrow_batch(8, 1, [], NARROW, 4) == 4  # never above the cap
    assert narrow_batch(4, 1, [0.2], NARROW, 2) == 2  # ... while both instances clear the queue
    assert narrow_batch(10, 1, [0.2], NARROW, 2, limit=8, best=8) == 8  # a backlog: full batches
    assert narrow_batch(10, 2, [], NARROW, 2, limit=8, best=8) == 5  # ... split over the free ones
    # the other instance ends in 1 ms: half the queue now, the other half on it then
    assert narrow_batch(8, 1, [0.001], NARROW, 8) == 4
    # ... in 200 ms: all of it now
    assert narrow_batch(8, 1, [0.2], NARROW, 8) == 8


def test_live_timings_learn_the_level_and_keep_the_shape() -> None:
    timings = Timings(BucketTimes({1: 0.010, 2: 0.019, 4: 0.036}), window=3, now=0.0, prior=0)
    timings.observe(1, 0.030, now=5.0)  # three times slower than at warm-up
    assert timings.level == pytest.approx(3.0)
    assert timings.times.seconds == pytest.approx({1: 0.030, 2: 0.057, 4: 0.108})
    assert timings.times.cap(4) == timings.warm.cap(4) == 4  # the cap is the shape's
    timings.observe(3, 0.0825, now=5.0)  # any size counts, against its interpolated figure
    timings.observe(2, 0.5, now=6.0)  # one outlier: the median holds
    assert timings.level == pytest.approx(3.0)
    assert not timings.stale(10.0, after_s=5.0) and timings.stale(11.0, after_s=5.0)
    pinned = Timings(BucketTimes({1: 0.030}), learn=False)
    pinned.observe(1, 0.001, now=1.0)
    assert pinned.times.seconds == {1: 0.030} and not pinned.stale(100.0)


def state(timings: Timings) -> tuple[bool, float]:
    return timings.exploring, round(timings.level, 6)


def test_one_slow_batch_does_not_set_the_level() -> None:
    # the window starts with two samples at the warm-up's level: a first batch run cold
    # (2.9x its warm-up time, as the wide runner's first after the start-up was) moves nothing;
    # slow batches in a row do
    timings = Timings(BucketTimes({1: 0.010, 2: 0.019}), now=0.0, explore_s=10.0)
    timings.observe(1, 0.029, now=1.0)
    assert state(timings) == (False, 1.0)
    timings.observe(1, 0.030, now=1.1)
    assert timings.level == pytest.approx(1.95)  # the median of 1, 1, 2.9 and 3
    timings.observe(1, 0.030, now=1.2)
    assert timings.level == pytest.approx(2.9)


def test_a_mode_back_after_a_while_starts_again_from_its_warm_up() -> None:
    timings = Timings(BucketTimes({1: 0.010, 2: 0.019}), now=0.0, explore_s=10.0)
    for t in range(5):
        timings.observe(1, 0.030, now=1.0 + t)
    assert timings.level == pytest.approx(3.0)
    assert timings.stale(15.0) and state(timings) == (False, 3.0)
    # back after 10 s: its old samples are dropped, and it runs three batches before it is
    # judged; two fast ones are enough to show it is fast again
    timings.observe(1, 0.005, now=16.0)
    assert state(timings) == (True, 1.0)
    timings.observe(1, 0.005, now=16.1)
    assert state(timings) == (True, 0.75)
    timings.observe(1, 0.005, now=16.2)
    assert state(timings) == (False, 0.5)
    frozen = Timings(BucketTimes({1: 0.010}), now=0.0, explore_s=0.0)  # explore_s 0: no reset
    for t in range(3):
        frozen.observe(1, 0.030, now=100.0 * t)
    assert state(frozen) == (False, 3.0)


def test_core_budget() -> None:
    budget = CoreBudget(2)
    assert budget.try_acquire(1) and not budget.try_acquire(2) and budget.try_acquire(1)
    assert budget.free == 0 and budget.max_in_use == 2
    budget.release(2)
    assert budget.try_acquire(2)
    with pytest.raises(RuntimeError):
        budget.release(3)


def test_measure_times_every_size_and_compares_bit_for_bit() -> None:
    batch = np.arange(4 * 2 * 2 * 3, dtype=np.uint8).reshape(4, 2, 2, 3)
    order: list[str] = []

    def runner(name: str, delay: float):
        def run(x: np.ndarray):
            order.append(f"{name}{len(x)}")
            time.sleep(delay)
            return timed(lambda y: expected_logits(y, 5), x)

        return run

    (a, out_a), (b, out_b) = measure([runner("a", 0.0), runner("b", 0.002)], batch, [1, 4], 2)
    assert order == ["a1", "b1", "a1", "b1", "a4", "b4", "a4", "b4"]  # in turn, call by call
    order.clear()  # however slow, every size is timed at least 3 times (the fastest of 3)
    measure([runner("a", 0.0), runner("b", 0.0)], batch, [1], calls=5, budget_s=0.0)
    assert order == ["a1", "b1"] * 3
    assert a.sizes == b.sizes == [1, 4] and set(out_a) == {1, 4}
    assert first_difference(out_a, out_b) is None
    other = {n: v.copy() for n, v in out_a.items()}
    other[4][1, 3] += 1e-6
    assert "batch of 4" in (first_difference(out_a, other) or "")


# ----------------------------------------------------------------------------- the batcher
@dataclass
class Runtime:
    """What the fake runners of one test do and saw."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    threads_now: int = 0
    max_threads: int = 0
    over_budget: list[str] = field(default_factory=list)
    cores: int = 2
    batches: list[tuple[str, int]] = field(default_factory=list)  # (mode, images)
    delay_s: dict[str, float] = field(default_factory=dict)  # mode -> seconds per batch
    hold: dict[str, threading.Event] = field(default_factory=dict)  # mode -> wait for it
    fail: dict[str, Callable[[np.ndarray], bool]] = field(default_factory=dict)
    inside: dict[str, int] = field(default_factory=lambda: {"narrow": 0, "wide": 0})


RUNTIMES: dict[str, Runtime] = {}


class ModeFake(FakeBackend):
    """A runner that says which mode it is and how many threads it holds while it runs."""

    name = "mode-fake"

    @classmethod
    def wide_config(cls, config: ModelConfig, threads: int) -> ModelConfig | None:
        return config.model_copy(update={"options": {"mode": "wide", "threads": threads}})

    def infer(self, batch: np.ndarray) -> np.ndarray:
        rt = RUNTIMES[self.config.name]
        mode = str(self.config.options.get("mode", "narrow"))
        threads = int(self.config.options.get("threads", 1))
        with rt.lock:
            rt.threads_now += threads
            rt.max_threads = max(rt.max_threads, rt.threads_now)
            if rt.threads_now > rt.cores:
                rt.over_budget.append(f"{mode} started with {rt.threads_now} threads running")
            rt.batches.append((mode, int(batch.shape[0])))
            rt.inside[mode] += 1
        try:
            if mode in rt.hold:
                rt.hold[mode].wait(30)
            time.sleep(rt.delay_s.get(mode, 0.0))
            if mode in rt.fail and rt.fail[mode](batch):
                raise RuntimeError(f"{mode} runner failure")
            return expected_logits(batch, self.config.num_classes)
        finally:
            with rt.lock:
                rt.threads_now -= threads
                rt.inside[mode] -= 1


def adaptive(
    name: str,
    narrow: BucketTimes = NARROW,
    wide: BucketTimes = WIDE,
    learn: bool = False,
    explore_s: float = 0.0,
    decoding: Callable[[], int] | None = None,
    **batching: object,
) -> tuple[DynamicBatcher, Runtime, Metrics]:
    """A started batcher: two one-thread instances and a wide runner of two threads, whose
    per-batch times are these (pinned unless `learn`: the fakes take no time of their own)."""
    cfg = fake_config(name, backend="mode-fake", batching=BatchingConfig(instances=2, **batching))
    rt = RUNTIMES[name] = Runtime()
    wide_cfg = ModeFake.wide_config(cfg, 2)
    assert wide_cfg is not None
    schedule = Schedule(
        "adaptive",
        cores=2,
        narrow_threads=1,
        wide_threads=2,
        narrow=narrow,
        wide=wide,
        max_batch_size=cfg.batching.max_batch_size,
        # as the repository builds it (app/repository/instances.py): from the config
        wide_max_batch=wide_batch_limit(
            cfg.batching.wide_max_batch, 2, cfg.batching.max_batch_size
        ),
        learn=learn,
        explore_s=explore_s,
    )
    metrics = Metrics()
    batcher = DynamicBatcher(
        name,
        [ModeFake(cfg), ModeFake(cfg)],
        cfg.batching,
        metrics.for_model(name),
        schedule=schedule,
        wide=(ModeFake(wide_cfg), ThreadPoolExecutor(1)),
        decoding=decoding,
    )
    batcher.start()
    return batcher, rt, metrics


def images(value: int, n: int = 1) -> np.ndarray:
    return np.full((n, 224, 224, 3), value, np.uint8)


def far() -> float:
    return time.monotonic() + 30


async def inside(rt: Runtime, mode: str, n: int = 1) -> None:
    for _ in range(5000):
        if rt.inside[mode] >= n:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"{rt.inside[mode]} {mode} batches running, expected {n}")


def mode_batches(metrics: Metrics, name: str, mode: str) -> float:
    value = metrics.registry.get_sample_value(
        "resnet_serve_batches_total", {"model": name, "mode": mode}
    )
    return value or 0.0


async def test_a_lone_request_runs_on_every_core() -> None:
    batcher, rt, metrics = adaptive("lone")
    for v in range(3):  # one client at a time
        rows = await batcher.submit(images(v), far())
        assert int(np.argmax(rows[0])) == v
    assert rt.batches == [("wide", 1)] * 3
    assert mode_batches(metrics, "lone", "wide") == 3
    assert batcher.telemetry.snapshot().modes == {"wide": [3, 3]}
    await batcher.close()


# the wide runner beats two instances at two images (12 ms against 20 side by side)
FAST_WIDE = BucketTimes({1: 0.008, 2: 0.012, 4: 0.022, 8: 0.042})


async def test_two_queued_images_run_side_by_side_by_default() -> None:
    # the default wide_max_batch (0): one image fewer than the instances, so two queued images
    # run on both instances even where the warm-up's times favour one wide batch of both
    batcher, rt, _ = adaptive("pair", NARROW, FAST_WIDE)
    assert batcher.describe()["wide_max_batch"] == 1
    rows = await asyncio.gather(batcher.submit(images(1), far()), batcher.submit(images(2), far()))
    assert [int(np.argmax(r[0])) for r in rows] == [1, 2]
    assert rt.batches == [("narrow", 1), ("narrow", 1)]
    await batcher.close()
    # set higher, the wide runner takes both as one batch when its times say it is sooner
    batcher, rt, _ = adaptive("pair-wide", NARROW, FAST_WIDE, wide_max_batch=8)
    assert batcher.describe()["wide_max_batch"] == 8
    rows = await asyncio.gather(batcher.submit(images(3), far()), batcher.submit(images(4), far()))
    assert [int(np.argmax(r[0])) for r in rows] == [3, 4]
    assert rt.batches == [("wide", 2)]
    await batcher.close()


async def test_no_wide_batch_starts_while_images_are_being_decoded() -> None:
    # requests on their way (a load, not a lone client): the instances run the queue, and the
    # decoding does not share a core with a wide runner whose threads wait for each other
    on_their_way = [0]
    batcher, rt, metrics = adaptive("decoding", decoding=lambda: on_their_way[0])
    on_their_way[0] = 2
    rows = await batcher.submit(images(5), far())
    assert int(np.argmax(rows[0])) == 5 and rt.batches == [("narrow", 1)]
    on_their_way[0] = 0  # decoded and answered: a lone request again takes every core
    rows = await batcher.submit(images(6), far())
    assert int(np.argmax(rows[0])) == 6 and rt.batches == [("narrow", 1), ("wide", 1)]
    assert mode_batches(metrics, "decoding", "narrow") == mode_batches(metrics, "decoding", "wide")
    await batcher.close()


async def test_queued_requests_are_split_over_the_instances() -> None:
    # the old scheduler: the first free instance took all 8 and the other idled
    batcher, rt, _ = adaptive("split")
    rt.hold["wide"] = threading.Event()
    first = batcher.submit(images(1), far())
    await inside(rt, "wide")  # every core busy: the next 8 queue up
    rest = [batcher.submit(images(v), far()) for v in range(8)]
    rt.hold["wide"].set()
    results = await asyncio.gather(first, *rest)
    assert rt.batches == [("wide", 1), ("narrow", 4), ("narrow", 4)]
    assert [int(np.argmax(r[0])) for r in results] == [1, *range(8)]
    await batcher.close()


async def test_no_batch_ever_runs_beyond_the_core_budget() -> None:
    batcher, rt, metrics = adaptive("budget")
    rt.delay_s = {"narrow": 0.004, "wide": 0.002}

    async def client(i: int) -> None:
        for j in range(12):
            rows = await batcher.submit(images((i * 12 + j) % 256), far())
            assert int(np.argmax(rows[0])) == (i * 12 + j) % 256
            await asyncio.sleep(0.003 * (i % 3))

    # bursts and lulls: one client, then 12 at once, then one again
    await client(0)
    await asyncio.gather(*(client(i) for i in range(12)))
    await client(1)
    await batcher.close()
    assert not rt.over_budget, rt.over_budget[:3]
    assert rt.max_threads == 2 and batcher.max_cores_in_use == 2
    assert mode_batches(metrics, "budget", "wide") >= 12  # both modes ran
    assert mode_batches(metrics, "budget", "narrow") >= 2


async def test_a_stuck_wide_batch_does_not_stall_the_instances() -> None:
    batcher, rt, _ = adaptive("stuck-wide", infer_timeout_s=0.2)
    rt.hold["wide"] = threading.Event()
    with pytest.raises(InferenceError, match="did not finish"):
        await batcher.submit(images(1), far())  # alone: wide, and it hangs
    assert rt.inside["wide"] == 1 and batcher.healthy
    # the wide runner is out until its call returns; the instances answer meanwhile
    rows = await asyncio.wait_for(
        asyncio.gather(*(batcher.submit(images(v), far()) for v in range(6))), 5
    )
    assert [int(np.argmax(r[0])) for r in rows] == list(range(6))
    assert rt.inside["wide"] == 1 and {m for m, _ in rt.batches[1:]} == {"narrow"}
    rt.hold["wide"].set()
    await batcher.close()


async def test_a_stuck_instance_keeps_its_core_and_the_other_answers() -> None:
    batcher, rt, _ = adaptive("stuck-narrow", infer_timeout_s=0.2)
    release = threading.Event()
    rt.fail["narrow"] = lambda batch: bool((batch == 9).any()) and not release.wait(30)
    rt.delay_s = {"narrow": 0.002}
    hold = threading.Event()
    rt.hold["wide"] = hold
    blocker = batcher.submit(images(1), far())  # wide, held: the next two queue
    await inside(rt, "wide")
    stuck = batcher.submit(images(9), far())
    other = batcher.submit(images(2), far())
    hold.set()
    await blocker
    assert int(np.argmax((await other)[0])) == 2
    with pytest.raises(InferenceError, match="did not finish"):
        await stuck
    assert batcher.healthy and batcher.cores_in_use >= 1  # the stuck call keeps its core
    later = [await batcher.submit(images(v), far()) for v in (3, 4, 5)]  # one at a time
    assert [int(np.argmax(r[0])) for r in later] == [3, 4, 5]
    assert rt.batches[-3:] == [("narrow", 1)] * 3  # never wide beside a stuck instance
    assert not rt.over_budget
    release.set()
    await batcher.close()


async def test_a_failing_batch_in_one_mode_fails_only_itself() -> None:
    batcher, rt, metrics = adaptive("failing")
    rt.fail["wide"] = lambda batch: bool((batch == 66).any())
    with pytest.raises(InferenceError, match="wide runner failure"):
        await batcher.submit(images(66), far())
    assert int(np.argmax((await batcher.submit(images(5), far()))[0])) == 5  # wide again
    rt.fail = {"narrow": lambda batch: bool((batch == 77).any())}
    rt.hold["wide"] = threading.Event()
    blocker = batcher.submit(images(1), far())
    await inside(rt, "wide")
    queued = [batcher.submit(images(v), far()) for v in (77, 8)]  # one batch on each instance
    rt.hold["wide"].set()
    got = await asyncio.gather(blocker, *queued, return_exceptions=True)
    assert isinstance(got[1], InferenceError) and "narrow runner failure" in got[1].message
    assert isinstance(got[2], np.ndarray) and int(np.argmax(got[2][0])) == 8
    assert rt.batches[-2:] == [("narrow", 1), ("narrow", 1)]
    assert (
        metrics.registry.get_sample_value(
            "resnet_serve_inference_failures_total", {"model": "failing"}
        )
        == 2
    )
    await batcher.close()


async def test_a_near_deadline_cuts_the_batch() -> None:
    # 50 ms per image on an instance: a request due in 130 ms does not join a batch of 3 or 4
    slow = BucketTimes({1: 0.05, 2: 0.1, 4: 0.2, 8: 0.4})
    batcher, rt, _ = adaptive("deadline", slow, BucketTimes({1: 0.03, 8: 0.24}))
    rt.hold["wide"] = threading.Event()
    first = batcher.submit(images(1), far())
    await inside(rt, "wide")
    soon = batcher.submit(images(2), time.monotonic() + 0.13)
    rest = [batcher.submit(images(v), far()) for v in range(3, 10)]
    rt.hold["wide"].set()
    await asyncio.gather(first, soon, *rest)
    mode, size = rt.batches[1]
    assert mode == "narrow" and size <= 2  # not the even split of 4 (2 end in 100 ms)
    assert sum(n for _, n in rt.batches[1:]) == 8
    await batcher.close()


async def test_static_scheduler_takes_whatever_is_queued() -> None:
    cfg = fake_config("static-mode", batching=BatchingConfig(instances=2, scheduler="static"))
    from app.backends import create_backend
    from tests.fakes import Behaviour

    behaviour = FakeBackend.behaviour["static-mode"] = Behaviour(hold=threading.Event())
    metrics = Metrics()
    batcher = DynamicBatcher(
        "static-mode",
        [create_backend(cfg), create_backend(cfg)],
        cfg.batching,
        metrics.for_model("static-mode"),
    )
    batcher.start()
    first = batcher.submit(images(1), far())
    for _ in range(5000):
        if behaviour.concurrent:
            break
        await asyncio.sleep(0.001)
    rest = [batcher.submit(images(v), far()) for v in range(8)]
    assert behaviour.hold is not None
    behaviour.hold.set()
    await asyncio.gather(first, *rest)
    assert behaviour.batches == [1, 8]
    assert batcher.describe()["scheduler"] == "static"
    assert mode_batches(metrics, "static-mode", "narrow") == 2
    await batcher.close()


async def test_a_wide_runner_slowed_by_contention_loses_lone_batches() -> None:
    # at warm-up the wide runner took 11 ms for one image; now (other processes on the cores)
    # it takes 60, and an instance still takes 20
    batcher, rt, _ = adaptive("contended", learn=True, explore_s=30.0)
    rt.delay_s = {"narrow": 0.020, "wide": 0.060}
    for v in range(5):  # one client at a time
        await batcher.submit(images(v), far())
    # one slow batch could be a cold start (Timings' prior): the second shows the level
    assert [m for m, _ in rt.batches] == ["wide", "wide", "narrow", "narrow", "narrow"]
    await batcher.close()


async def test_a_wide_runner_that_looked_slow_is_tried_again() -> None:
    slow_wide = BucketTimes({1: 0.050, 2: 0.100, 4: 0.200, 8: 0.400})
    batcher, rt, _ = adaptive("learn-wide", NARROW, slow_wide, learn=True, explore_s=0.2)
    rt.delay_s = {"narrow": 0.020, "wide": 0.002}  # really 2 ms, not 50
    await asyncio.sleep(0.25)
    for v in range(8):  # one client at a time
        await batcher.submit(images(v), far())
    modes = [m for m, _ in rt.batches]
    # tried because its figure was old (three lone batches: EXPLORE_BATCHES), then chosen on
    # its merit; the instances' own old figure was tried too, for as many batches
    assert modes[:3] == ["wide"] * 3 and modes[-2:] == ["wide", "wide"]
    assert modes.count("narrow") <= 3
    described = batcher.describe()
    assert isinstance(described["bucket_ms"], dict) and described["bucket_ms"]["wide"][1] < 10
    await batcher.close()
