"""DynamicBatcher: one bounded queue per model, `instances` workers pulling whole requests from it.

- submit() never blocks: a full queue raises QueueFull at once (503 + Retry-After upstream).
- A worker that is free takes what is queued (up to max_batch_size images, FIFO, never
  splitting a request) and runs it at once: no instance idles while requests wait for a
  fuller batch. Batches grow by themselves while every instance is busy. A positive
  max_queue_delay_ms adds Triton's optional wait for a fuller batch.
- Requests whose client left (future cancelled) or whose deadline passed are dropped before
  they reach the backend.
- Stacking, inference and splitting run on the instance's own thread; each request's future
  gets its own rows, or the batch's error (only the requests of that batch fail).
- A model with input.decode "gpu" queues encoded images (lists of EncodedImage) instead of
  pixels; such a batch goes to backend.infer_encoded, which decodes on the model's device and
  names the images it could not read: only their requests fail (400), not their neighbours.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.backends.base import Backend
from app.config import BatchingConfig
from app.errors import (
    DeadlineExceeded,
    InferenceError,
    ModelNotReady,
    QueueFull,
    ServeError,
    about_image,
)
from app.metrics import ModelTelemetry
from app.observability.request import (
    RequestRecord,
    batch_ended,
    batch_started,
    current,
    request_ids,
)
from app.preprocess import Batch, EncodedImage
from app.scheduling import (
    MODES,
    BucketTimes,
    CoreBudget,
    Mode,
    Schedule,
    Timings,
    narrow_batch,
    prefers_wide,
)

log = logging.getLogger(__name__)


def instance_executor(model: str, index: int) -> ThreadPoolExecutor:
    """The one thread an instance runs on: its load, its warm-up and all of its batches."""
    return ThreadPoolExecutor(1, thread_name_prefix=f"{model}-instance{index}")


@dataclass
class WorkItem:
    images: Batch  # uint8 (k, H, W, 3), or k EncodedImage; k <= max_batch_size
    future: asyncio.Future[np.ndarray]
    deadline: float  # time.monotonic() seconds
    enqueued_ns: int = field(default_factory=time.perf_counter_ns)
    first: int = 0  # index of images[0] in its request (a request larger than a batch is split)
    multi: bool = False  # the request holds several images (errors then say which one)
    # the record of the request it came from (its phase marks, its trace), taken from the task
    # that submitted it (app/observability/request.py); None outside a request
    request: RequestRecord | None = field(default_factory=current)

    @property
    def size(self) -> int:
        return len(self.images)


@dataclass
class BatchResult:
    logits: np.ndarray
    input_ns: int
    infer_ns: int
    errors: dict[int, Exception] = field(default_factory=dict)  # batch row -> its own error
    decode_fallbacks: dict[str, int] = field(default_factory=dict)  # reason -> images (GPU decode)


def _run_encoded(backend: Backend, parts: list[Batch], pad_to: int) -> BatchResult:
    """A batch holding encoded images: the backend decodes (on its device) and infers."""
    t0 = time.perf_counter_ns()
    images: list[EncodedImage] = []
    for p in parts:
        images.extend(p if isinstance(p, list) else [EncodedImage(pixels=row) for row in p])
    t1 = time.perf_counter_ns()
    logits, errors = backend.infer_encoded(images, pad_to)
    t2 = time.perf_counter_ns()
    fallbacks = backend.take_decode_fallbacks()
    return BatchResult(logits[: len(images)], t1 - t0, t2 - t1, errors, fallbacks)


def _run_batch(
    backend: Backend, parts: list[Batch], pad_to: int, reuse: Callable[[int], np.ndarray] | None
) -> BatchResult:
    """On the instance's thread: stack (into a reused buffer), pad, infer."""
    arrays = [p for p in parts if not isinstance(p, list)]
    if len(arrays) < len(parts):  # some requests are encoded images: the backend decodes
        return _run_encoded(backend, parts, pad_to)
    t0 = time.perf_counter_ns()
    n = sum(p.shape[0] for p in arrays)
    if len(arrays) == 1 and pad_to == n:
        batch = arrays[0]
    else:
        batch = (
            reuse(pad_to)
            if reuse is not None
            else np.empty((pad_to, *arrays[0].shape[1:]), np.uint8)
        )
        offset = 0
        for p in arrays:
            batch[offset : offset + p.shape[0]] = p
            offset += p.shape[0]
        if pad_to > n:
            batch[n:] = 0
    t1 = time.perf_counter_ns()
    logits = backend.infer(batch)
    t2 = time.perf_counter_ns()
    return BatchResult(logits[:n], t1 - t0, t2 - t1)


@dataclass(eq=False)
class Runner:
    """One thing that runs batches on its own thread: an instance ("narrow": its share of the
    model's cores) or the adaptive scheduler's wide runner (all of them)."""

    backend: Backend
    executor: ThreadPoolExecutor
    mode: Mode
    tokens: int  # cores it holds while a batch runs
    busy: bool = False  # a batch is in its backend call (or being formed for it)
    stuck: bool = False  # its call outlived infer_timeout_s and has not returned yet
    holding: bool = False  # it holds its tokens now
    started: float = 0.0  # time.monotonic() when its batch started
    expected_s: float = 0.0  # the batch's time measured at warm-up (0: unknown)
    buffers: dict[int, np.ndarray] = field(default_factory=dict)

    def reuse(self, n: int) -> np.ndarray:
        buf = self.buffers.get(n)
        if buf is None:
            buf = self.buffers[n] = np.empty((n, *self.backend.input_shape()), np.uint8)
        return buf

    def left_s(self, now: float) -> float:
        return max(0.0, self.started + self.expected_s - now)


class DynamicBatcher:
    def __init__(
        self,
        model: str,
        backends: list[Backend],
        config: BatchingConfig,
        telemetry: ModelTelemetry,
        pad_to_bucket: bool = False,
        retry_after_s: float = 1.0,
        executors: list[ThreadPoolExecutor] | None = None,
        on_health_change: Callable[[], None] | None = None,
        *,
        schedule: Schedule | None = None,
        wide: tuple[Backend, ThreadPoolExecutor] | None = None,
        decoding: Callable[[], int] | None = None,
    ) -> None:
        """executors: one single-thread executor per backend, the thread that loaded and
        warmed it up (CUDA graphs and streams belong to a thread); made here when absent.
        `on_health_change` is called whenever `healthy` may have changed (every instance
        stuck, or one back): the owner of readiness decides what that means.

        `schedule` and `wide` (the wide runner's backend and its thread) turn the adaptive
        scheduler on (app/scheduling.py) when the schedule is adaptive; the batcher then owns
        the wide backend and closes it. Without them every instance holds one core of a
        budget of one per instance and takes whatever is queued (the static scheduler).
        `decoding` gives the images the process is decoding now (app/decode_limits.py): while
        any are, no batch starts wide (see `_choose`)."""
        if not backends:
            raise ValueError("a batcher needs at least one backend instance")
        if executors is not None and len(executors) != len(backends):
            raise ValueError(f"{len(executors)} executors for {len(backends)} backends")
        self._given_executors = list(executors or [])
        self.model = model
        self.backends = backends
        self.config = config
        self.telemetry = telemetry
        self.pad_to_bucket = pad_to_bucket
        self.retry_after_s = retry_after_s
        self._on_health_change = on_health_change
        if schedule is None:
            schedule = Schedule("static", max_batch_size=config.max_batch_size)
        elif schedule.adaptive and wide is None:
            raise ValueError("an adaptive schedule needs its wide runner")
        self.schedule = schedule
        self._timings: dict[Mode, Timings] = {}
        self.retime(schedule.narrow, schedule.wide, schedule.learn)
        self._wide_spec = wide if schedule.adaptive else None
        self._decoding = decoding or (lambda: 0)
        self._queue: deque[WorkItem] = deque()
        self._work = asyncio.Event()
        self._accepting = False
        self._dispatcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._executors: list[ThreadPoolExecutor] = []
        self._narrow: list[Runner] = []
        self._wide: Runner | None = None
        self._budget = CoreBudget(1)
        self._busy = 0  # batches whose requests are not answered yet
        self._idle = asyncio.Event()
        self._idle.set()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        per = self.schedule.narrow_threads if self.schedule.adaptive else 1
        for i, backend in enumerate(self.backends):
            executor = (
                self._given_executors[i]
                if self._given_executors
                else instance_executor(self.model, i)
            )
            self._executors.append(executor)
            self._narrow.append(Runner(backend, executor, "narrow", per))
        total = per * len(self._narrow)
        if self._wide_spec is not None:
            backend, executor = self._wide_spec
            self._executors.append(executor)
            self._wide = Runner(backend, executor, "wide", total)
        self._budget = CoreBudget(total)
        self._dispatcher = asyncio.create_task(self._dispatch())
        self._accepting = True

    @property
    def accepting(self) -> bool:
        return self._accepting

    def stop_accepting(self) -> None:
        self._accepting = False

    async def drain(self) -> None:
        """Wait until every accepted request has its answer."""
        while self._queue or self._busy:
            self._idle.clear()
            self._work.set()
            await self._idle.wait()

    async def close(self) -> None:
        self.stop_accepting()
        await self.drain()
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
            self._dispatcher = None
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for executor in self._executors:
            # off the loop: a call stuck past infer_timeout_s must not freeze every other
            # model while a reload or unload retires these instances
            await asyncio.to_thread(executor.shutdown, True)
        if self._wide is not None:  # the batcher's own: the repository closes the instances
            await asyncio.to_thread(_close_quietly, self._wide.backend)
            self._wide = None
        self._executors.clear()

    @property
    def healthy(self) -> bool:
        """False while every instance is stuck in a call that outlived infer_timeout_s."""
        if not self._narrow:  # not started: as many instances as backends, none stuck
            return True
        return any(not r.stuck for r in self._narrow)

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def cores_in_use(self) -> int:
        return self._budget.in_use

    @property
    def max_cores_in_use(self) -> int:
        """The most cores ever held at once by running batches (never above the budget)."""
        return self._budget.max_in_use

    def describe(self) -> dict[str, Any]:
        """The scheduler in force, for /v1/models and the V2 statistics."""
        live: dict[str, BucketTimes] = {mode: t.times for mode, t in self._timings.items()}
        return {
            **self.schedule.describe(live or None),
            "level": {mode: round(t.level, 3) for mode, t in self._timings.items()},
            "cores_in_use": self._budget.in_use,
            "wide_running": bool(self._wide and self._wide.busy),
        }

    def retime(
        self, narrow: BucketTimes | None, wide: BucketTimes | None, learn: bool = True
    ) -> None:
        """Start the live per-batch times from these (the warm-up's; tests pin their own with
        learn=False)."""
        now = time.monotonic()
        self._timings = {
            mode: Timings(times, learn=learn, now=now, explore_s=self.schedule.explore_s)
            for mode, times in zip(MODES, (narrow, wide), strict=True)
            if times is not None and self.schedule.adaptive
        }

    # ------------------------------------------------------------------ submit
    def submit(self, images: Batch, deadline: float) -> Awaitable[np.ndarray]:
        """Queue one request's images (pixels, or EncodedImages for a model that decodes on its
        GPU); the awaitable gives its logits, row for row.

        Raises QueueFull or ModelNotReady at once, never waits for room."""
        if not self._accepting:
            raise ModelNotReady(f"model {self.model!r} is not accepting requests")
        limit = self.config.max_batch_size
        starts = range(0, len(images), limit)
        chunks = [images[i : i + limit] for i in starts]
        if len(self._queue) + len(chunks) > self.config.max_queue_size:
            self._purge_abandoned()
        if len(self._queue) + len(chunks) > self.config.max_queue_size:
            self.telemetry.rejected("queue_full")
            raise QueueFull(
                f"model {self.model!r} has {len(self._queue)} requests queued "
                f"(max_queue_size {self.config.max_queue_size}); retry shortly",
                self.retry_after_s,
            )
        loop = asyncio.get_running_loop()
        multi = len(images) > 1
        items = [
            WorkItem(chunk, loop.create_future(), deadline, first=i, multi=multi)
            for i, chunk in zip(starts, chunks, strict=True)
        ]
        self._queue.extend(items)
        self.telemetry.queue_depth.set(len(self._queue))
        self._work.set()
        if len(items) == 1:
            return items[0].future
        return _gather_rows([it.future for it in items])

    def _purge_abandoned(self) -> None:
        """Drop entries whose client left or whose deadline was already answered."""
        live = [item for item in self._queue if not item.future.done()]
        if len(live) != len(self._queue):
            self._queue = deque(live)
            self.telemetry.queue_depth.set(len(self._queue))

    # ------------------------------------------------------------------ taking work
    def _take(
        self,
        room: int | None = None,
        batch_time: Callable[[int], float] | None = None,
        *,
        first: bool = True,
    ) -> list[WorkItem]:
        """Pop live requests, FIFO, up to `room` images (default max_batch_size); fail the
        expired ones. A request is never split and never overtaken; with `first` the first
        live one is taken even when it is larger than `room` (a new batch). With `batch_time`
        (seconds for a batch of n) a request joins only if the batch would still end before
        every deadline in it."""
        room = self.config.max_batch_size if room is None else room
        taken: list[WorkItem] = []
        now = time.monotonic()
        earliest = float("inf")
        images = 0
        while self._queue:
            item = self._queue[0]
            if item.future.done():  # client left, or its deadline was already answered
                self._queue.popleft()
                continue
            if item.deadline <= now:
                self._queue.popleft()
                item.future.set_exception(
                    DeadlineExceeded(
                        f"deadline passed after {_ms_since(item.enqueued_ns)} ms in the queue"
                    )
                )
                continue
            if taken or not first:
                if item.size > room:
                    break
                ends = now + batch_time(images + item.size) if batch_time else now
                if ends > min(earliest, item.deadline):
                    break  # it would make the batch miss a deadline: the next batch takes it
            taken.append(self._queue.popleft())
            room -= item.size
            images += item.size
            earliest = min(earliest, item.deadline)
        self.telemetry.queue_depth.set(len(self._queue))
        return taken

    def _queued_images(self) -> int:
        return sum(it.size for it in self._queue if not it.future.done())

    def _choose(self) -> tuple[Runner | None, int]:
        """The runner that starts the next batch now and its room in images (None: none can)."""
        free = [
            r for r in self._narrow if not r.busy and not r.stuck and r.tokens <= self._budget.free
        ]
        if not self.schedule.adaptive:
            return (free[0], self.config.max_batch_size) if free else (None, 0)
        limit = self.config.max_batch_size
        narrow, wide_t = self._timings["narrow"], self._timings["wide"]
        narrow_cap = narrow.times.cap(limit)
        n = self._queued_images()
        now = time.monotonic()
        wide = self._wide
        wide_limit = self.schedule.wide_limit
        wide_cap = wide_t.times.cap(wide_limit)
        if (
            wide is not None
            and not wide.busy
            and self._budget.in_use == 0
            and n <= wide_limit
            and not self._decoding()
        ):
            # nothing runs and no image is being decoded: the wide runner, unless the instances
            # finish sooner; a mode that has not run for explore_s seconds gets a few lone
            # batches again (its level may be out of date: Timings). While images are decoded
            # (requests on their way: a load, not a lone client) the instances run the queue:
            # the decoding would share a core with the wide runner, whose threads wait for
            # each other after every operator, so it would stall both cores for the decode's
            # time, where an instance loses only its share; and the requests decoded would
            # then wait for the whole wide batch instead of finding an instance.
            share = math.ceil(n / max(1, len(free)))
            use_wide = prefers_wide(n, len(free), narrow.times, narrow_cap, wide_t.times, wide_cap)
            if not use_wide and wide_t.due(now):
                use_wide = True
            elif use_wide and free and share == 1 and narrow.due(now):
                use_wide = False
            if use_wide:
                return wide, wide_limit
        if not free:
            return None, 0
        busy_left = [r.left_s(now) for r in self._narrow if r.busy and not r.stuck]
        best = narrow.times.best(limit)
        size = narrow_batch(n, len(free), busy_left, narrow.times, narrow_cap, limit, best)
        return free[0], size

    def _times(self, runner: Runner) -> BucketTimes | None:
        timings = self._timings.get(runner.mode)
        return timings.times if timings is not None else None

    # ------------------------------------------------------------------ dispatching
    async def _dispatch(self) -> None:
        """Start batches while requests wait and a runner may start; then sleep until a request
        arrives or a batch ends."""
        while True:
            self._work.clear()
            while self._queue and self._start_next():
                pass
            if not self._queue and not self._busy:
                self._idle.set()
            await self._work.wait()

    def _start_next(self) -> bool:
        runner, room = self._choose()
        if runner is None:
            return False
        times = self._times(runner)
        items = self._take(room, times.time if times is not None else None)
        if not items:
            return False
        if not self._budget.try_acquire(runner.tokens):  # _choose checked: cannot happen
            raise RuntimeError(f"{runner.mode} runner started without its {runner.tokens} cores")
        runner.busy = runner.holding = True
        runner.started = time.monotonic()
        n = sum(it.size for it in items)
        runner.expected_s = times.time(n) if times is not None else 0.0
        self._busy += 1
        task = asyncio.create_task(self._run(runner, items, room))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def _returned(self, runner: Runner) -> None:
        """The runner's backend call returned (or never started): its cores are free again."""
        if runner.holding:
            runner.holding = False
            self._budget.release(runner.tokens)
        runner.busy = False
        if runner.stuck:
            runner.stuck = False
            self._health_changed()
            log.warning(
                "model %s: the stuck call returned; %s runner back at work", self.model, runner.mode
            )
        self._work.set()

    async def _run(self, runner: Runner, items: list[WorkItem], room: int) -> None:
        call: asyncio.Future[BatchResult] | None = None
        try:
            items = await self._fill(items, room)
            started = batch_started(items)  # each request's queue ends, infer begins
            call = await self._execute(runner, items)
            batch_ended(self.model, items, started)  # and the batch's span, when traced
        finally:
            self._busy -= 1
            if call is None:  # failed before its backend call started
                self._returned(runner)
            else:
                call.add_done_callback(lambda _: self._returned(runner))
            if not self._queue and not self._busy:
                self._idle.set()

    async def _fill(self, taken: list[WorkItem], room: int | None = None) -> list[WorkItem]:
        """Optional wait (max_queue_delay_ms) for a fuller batch."""
        delay = self.config.max_queue_delay_ms / 1000.0
        until = time.monotonic() + delay
        room = (self.config.max_batch_size if room is None else room) - sum(i.size for i in taken)
        while delay > 0 and room > 0:
            left = until - time.monotonic()
            if left <= 0:
                break
            if not self._queue:
                self._work.clear()
                try:
                    await asyncio.wait_for(self._work.wait(), left)
                except TimeoutError:
                    break
                finally:
                    self._work.set()  # the dispatcher looks again too
            more = self._take(room, first=False)
            if not more and self._queue:
                break  # the next request does not fit: run what we have
            taken += more
            room -= sum(i.size for i in more)
        return taken

    async def _execute(self, runner: Runner, items: list[WorkItem]) -> asyncio.Future[BatchResult]:
        """Run one batch on `runner` and answer its requests; returns the backend call (it may
        still run when it outlived infer_timeout_s)."""
        loop = asyncio.get_running_loop()
        start = time.perf_counter_ns()
        queue_ns = [start - it.enqueued_ns for it in items]
        n = sum(it.size for it in items)
        pad_to = self.config.bucket_for(n) if self.pad_to_bucket else n
        call = loop.run_in_executor(
            runner.executor,
            _run_batch,
            runner.backend,
            [it.images for it in items],
            pad_to,
            runner.reuse,
        )
        timeout = self.config.infer_timeout_s or None
        try:
            result = await asyncio.wait_for(asyncio.shield(call), timeout)
        except TimeoutError:
            self._stuck_call(runner, items, n, timeout or 0.0)
            return call
        except Exception as exc:
            log.error(
                "model %s: batch of %d failed (%s runner): %s: %s (requests %s)",
                self.model,
                n,
                runner.mode,
                type(exc).__name__,
                exc,
                request_ids(items),
            )
            self._fail(
                items,
                InferenceError(
                    f"model {self.model!r} failed on a batch of {n} images: "
                    f"{type(exc).__name__}: {exc}"
                ),
            )
            return call
        t_out = time.perf_counter_ns()
        offset = 0
        for it in items:
            rows = result.logits[offset : offset + it.size]
            bad = _first_error(result.errors, offset, it) if result.errors else None
            offset += it.size
            if it.future.done():
                continue
            if bad is not None:
                it.future.set_exception(bad)
            else:
                it.future.set_result(rows)
        self.telemetry.batch_done(
            n,
            queue_ns,
            result.input_ns,
            result.infer_ns,
            time.perf_counter_ns() - t_out,
            int(time.time() * 1000),
            mode=runner.mode,
        )
        timings = self._timings.get(runner.mode)
        if timings is not None:
            timings.observe(n, result.infer_ns / 1e9, time.monotonic())
        for reason, images in result.decode_fallbacks.items():
            self.telemetry.decode_fallback(reason, images)
        return call

    def _fail(self, items: list[WorkItem], error: InferenceError) -> None:
        """The whole batch failed: each of its requests gets the error, no other request."""
        self.telemetry.batch_failed()
        for it in items:
            if not it.future.done():
                it.future.set_exception(error)

    def _stuck_call(self, runner: Runner, items: list[WorkItem], n: int, timeout: float) -> None:
        """Fail the batch now; keep this runner out of work until its call returns.

        An instance keeps its cores until then: the others run on theirs, and the wide runner
        waits (it would share a core with the stuck call). The wide runner gives its cores
        back now instead: it holds every core, so keeping them would stop the whole model
        for as long as one call hangs, where one stuck instance never did. A call this far
        past its measured time is hung, not computing (30 s by default against milliseconds),
        so the instances running beside it do not share cores with a computation; should it
        still compute, they share them until it returns."""
        log.error(
            "model %s: batch of %d still running after %.1f s on the %s runner: failing it "
            "(requests %s)",
            self.model,
            n,
            timeout,
            runner.mode,
            request_ids(items),
        )
        self._fail(
            items,
            InferenceError(
                f"model {self.model!r} did not finish a batch of {n} images within {timeout:g} s"
            ),
        )
        runner.stuck = True
        if runner.mode == "wide" and runner.holding:
            runner.holding = False
            self._budget.release(runner.tokens)
            self._work.set()
        self._health_changed()
        if not self.healthy:
            log.error("model %s: every instance is stuck: not ready until one returns", self.model)

    def _health_changed(self) -> None:
        if self._on_health_change is not None:
            self._on_health_change()


def _first_error(errors: dict[int, Exception], offset: int, item: WorkItem) -> Exception | None:
    """The first image of this request (rows offset..offset+size) that could not be decoded."""
    for row in range(offset, offset + item.size):
        exc = errors.get(row)
        if exc is None:
            continue
        if item.multi and isinstance(exc, ServeError):
            return about_image(exc, item.first + row - offset)
        return exc
    return None


def _close_quietly(backend: Backend) -> None:
    try:
        backend.close()
    except Exception as exc:
        log.warning("closing %s failed: %s", backend.name, exc)


def _ms_since(ns: int) -> int:
    return int((time.perf_counter_ns() - ns) / 1e6)


async def _gather_rows(futures: list[asyncio.Future[np.ndarray]]) -> np.ndarray:
    try:
        parts = await asyncio.gather(*futures)
    except BaseException:
        for f in futures:
            f.cancel()
        raise
    return np.concatenate(parts)
