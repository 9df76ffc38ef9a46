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
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

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
    ) -> None:
        """executors: one single-thread executor per backend, the thread that loaded and
        warmed it up (CUDA graphs and streams belong to a thread); made here when absent.
        `on_health_change` is called whenever `healthy` may have changed (every instance
        stuck, or one back): the owner of readiness decides what that means."""
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
        self._queue: deque[WorkItem] = deque()
        self._work = asyncio.Event()
        self._accepting = False
        self._workers: list[asyncio.Task[None]] = []
        self._executors: list[ThreadPoolExecutor] = []
        self._busy = 0
        self._stuck = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        for i, backend in enumerate(self.backends):
            executor = (
                self._given_executors[i]
                if self._given_executors
                else instance_executor(self.model, i)
            )
            self._executors.append(executor)
            self._workers.append(asyncio.create_task(self._worker(backend, executor)))
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
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        for executor in self._executors:
            # off the loop: a call stuck past infer_timeout_s must not freeze every other
            # model while a reload or unload retires these instances
            await asyncio.to_thread(executor.shutdown, True)
        self._workers.clear()
        self._executors.clear()

    @property
    def healthy(self) -> bool:
        """False while every instance is stuck in a call that outlived infer_timeout_s."""
        return self._stuck < len(self.backends)

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

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

    # ------------------------------------------------------------------ workers
    def _take(self, room: int | None = None) -> list[WorkItem]:
        """Pop live requests, FIFO, up to `room` images (default max_batch_size); fail the
        expired ones. A request is never split and never overtaken."""
        room = self.config.max_batch_size if room is None else room
        taken: list[WorkItem] = []
        now = time.monotonic()
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
            if item.size > room:
                break
            taken.append(self._queue.popleft())
            room -= item.size
        self.telemetry.queue_depth.set(len(self._queue))
        return taken

    async def _fill(self, taken: list[WorkItem]) -> list[WorkItem]:
        """Optional wait (max_queue_delay_ms) for a fuller batch."""
        delay = self.config.max_queue_delay_ms / 1000.0
        until = time.monotonic() + delay
        room = self.config.max_batch_size - sum(i.size for i in taken)
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
            more = self._take(room)
            if not more and self._queue:
                break  # the next request does not fit: run what we have
            taken += more
            room -= sum(i.size for i in more)
        return taken

    async def _worker(self, backend: Backend, executor: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        buffers: dict[int, np.ndarray] = {}

        def reuse(n: int) -> np.ndarray:
            buf = buffers.get(n)
            if buf is None:
                buf = buffers[n] = np.empty((n, *backend.input_shape()), np.uint8)
            return buf

        while True:
            if not self._queue:
                self._work.clear()
                if not self._busy:
                    self._idle.set()
                await self._work.wait()
            taken = self._take()
            if not taken:
                continue
            self._busy += 1
            try:
                taken = await self._fill(taken)
                started = batch_started(taken)  # each request's queue ends, infer begins
                await self._execute(loop, backend, executor, taken, reuse)
                batch_ended(self.model, taken, started)  # and the batch's span, when traced
            finally:
                self._busy -= 1
                if not self._queue and not self._busy:
                    self._idle.set()

    async def _execute(
        self,
        loop: asyncio.AbstractEventLoop,
        backend: Backend,
        executor: ThreadPoolExecutor,
        items: list[WorkItem],
        reuse: Callable[[int], np.ndarray],
    ) -> None:
        start = time.perf_counter_ns()
        queue_ns = [start - it.enqueued_ns for it in items]
        n = sum(it.size for it in items)
        pad_to = self.config.bucket_for(n) if self.pad_to_bucket else n
        call = loop.run_in_executor(
            executor, _run_batch, backend, [it.images for it in items], pad_to, reuse
        )
        timeout = self.config.infer_timeout_s or None
        try:
            result = await asyncio.wait_for(asyncio.shield(call), timeout)
        except TimeoutError:
            await self._stuck_call(call, items, n, timeout or 0.0)
            return
        except Exception as exc:
            log.error(
                "model %s: batch of %d failed: %s: %s (requests %s)",
                self.model,
                n,
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
            return
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
        )
        for reason, images in result.decode_fallbacks.items():
            self.telemetry.decode_fallback(reason, images)

    def _fail(self, items: list[WorkItem], error: InferenceError) -> None:
        """The whole batch failed: each of its requests gets the error, no other request."""
        self.telemetry.batch_failed()
        for it in items:
            if not it.future.done():
                it.future.set_exception(error)

    async def _stuck_call(
        self, call: asyncio.Future[BatchResult], items: list[WorkItem], n: int, timeout: float
    ) -> None:
        """Fail the batch now; keep this instance out of work until its call returns."""
        log.error(
            "model %s: batch of %d still running after %.1f s: failing it (requests %s)",
            self.model,
            n,
            timeout,
            request_ids(items),
        )
        self._fail(
            items,
            InferenceError(
                f"model {self.model!r} did not finish a batch of {n} images within {timeout:g} s"
            ),
        )
        self._stuck += 1
        self._busy -= 1  # its requests are answered: drain() need not wait for this call
        if not self._queue and not self._busy:
            self._idle.set()
        self._health_changed()
        if not self.healthy:
            log.error("model %s: every instance is stuck: not ready until one returns", self.model)
        try:
            await call
        except Exception:
            pass
        finally:
            self._stuck -= 1
            self._busy += 1  # balanced by the worker's own decrement when this returns
            self._health_changed()
            log.warning("model %s: the stuck call returned; instance back at work", self.model)

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
