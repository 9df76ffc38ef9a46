"""The data plane: what every protocol adapter (classify API, KServe V2) calls. No HTTP here.

bytes -> decode (thread pool, per image, errors stay with the request) -> batcher.submit
-> await rows (deadline, client disconnect) -> top-k.

A model with input.decode "gpu" gets its headers checked here instead (same errors), and its
JPEGs travel to the backend encoded; see app.preprocess.inspect and docs/gpu.md.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from app.config import PreprocessConfig, Settings
from app.decode_limits import DecodeGate, DecodeLimits
from app.errors import DeadlineExceeded, InvalidInput, PayloadTooLarge, QueueFull, about_image
from app.observability import request as observed
from app.postprocess import top_k
from app.preprocess import (
    Batch,
    EncodedImage,
    decode_opened,
    gpu_decodable,
    inspect,
    open_checked,
)
from app.repository import ModelRepository, ServedModel

Disconnected = Callable[[], Awaitable[None]]


class ClientGone(Exception):
    """The client disconnected; nothing is answered."""


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    probability: float


def check_image_count(count: int, limit: int) -> None:
    """The image-count rule: at least one image (400), at most `limit` (413). Callers go
    through DataPlane.check_image_count, which applies the server's limit."""
    if count == 0:
        raise InvalidInput("the request holds no image")
    if count > limit:
        raise PayloadTooLarge(f"{count} images in one request; the limit is {limit}")


COSTLY_NICENESS = 10


def lower_thread_priority() -> None:
    """Raise the calling thread's niceness by COSTLY_NICENESS (Linux schedules threads on
    their own; elsewhere, or when refused, the thread keeps its priority)."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + COSTLY_NICENESS)
    except (AttributeError, OSError):
        pass


class DataPlane:
    def __init__(self, settings: Settings, repository: ModelRepository, decode_threads: int):
        """`decode_threads`: the decode pool's size in force (settings.decode_threads, or the
        thread budget's when that is 0); the decode gate is sized from it too."""
        self.settings = settings
        self.repository = repository
        self.decode_pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="decode")
        self.decode_limits = DecodeLimits.from_settings(settings)
        self.decode_gate = DecodeGate(settings, decode_threads)
        # Costly images decode in threads of their own (as many as the gate's costly slots),
        # at a lower CPU priority: they never take a decode thread from cheap images (a pool
        # of one, the budget's default up to 7 cores, has no half to spare), and where both
        # want the CPU the cheap ones, short, come first.
        self.costly_pool = ThreadPoolExecutor(
            self.decode_gate.costly_slots,
            thread_name_prefix="decode-costly",
            initializer=lower_thread_priority,
        )

    def close(self) -> None:
        """Stop the decode threads (after the requests that use them are answered)."""
        self.decode_pool.shutdown(wait=True)
        self.costly_pool.shutdown(wait=True)

    def model(self, name: str) -> ServedModel:
        return self.repository.get(name)

    def deadline(self, timeout_ms: float | None) -> float:
        """Absolute deadline (time.monotonic) of a request that starts now."""
        ms = self.settings.request_timeout_ms if timeout_ms is None else timeout_ms
        if ms <= 0:
            raise InvalidInput(f"timeout must be positive, got {ms} ms")
        ms = min(ms, self.settings.request_timeout_ms)  # a client may ask for less, never more
        return time.monotonic() + ms / 1000.0

    # ------------------------------------------------------------------ request checks
    # Each rule has one home here. DataPlane.infer applies the count and readiness rules to
    # every request (every protocol passes through it); an earlier call elsewhere is kept
    # only where it saves work, with a comment there saying which.
    def check_image_count(self, count: int) -> None:
        check_image_count(count, self.settings.max_images_per_request)

    def check_top_k(self, k: int) -> None:
        if not 1 <= k <= self.settings.max_top_k:
            raise InvalidInput(f"top_k must be between 1 and {self.settings.max_top_k}, got {k}")

    async def decode_images(self, model: ServedModel, images: list[bytes]) -> Batch:
        """Decode every image of one request in parallel; the first bad one fails the request.

        For a model that decodes on its GPU: check every header (and decode what nvJPEG is not
        given) instead, and return the list of EncodedImage the batcher carries."""
        record = observed.current()  # the request's phase marks (app/observability)
        if record is None:
            return await self._decode_images(model, images)
        record.at_model(model.name, model.config.version)
        record.decode_started(len(images))
        try:
            return await self._decode_images(model, images)
        finally:
            record.decode_ended()

    async def _decode_images(self, model: ServedModel, images: list[bytes]) -> Batch:
        self.check_image_count(len(images))  # early: before any image takes a decode slot
        cfg = model.config.input
        try:
            self.decode_gate.admit(len(images))  # 503 at once when the decode queue is full
        except QueueFull:
            model.telemetry.rejected("decode_queue_full")
            raise
        try:
            results = await asyncio.gather(
                *(self._decode_one(model, cfg, data) for data in images),
                return_exceptions=True,
            )
        finally:
            self.decode_gate.release(len(images))
        for i, result in enumerate(results):
            if isinstance(result, BaseException):
                if len(images) > 1 and isinstance(result, (InvalidInput, PayloadTooLarge)):
                    raise about_image(result, i) from None
                if isinstance(result, QueueFull):  # the costly images' line was full
                    model.telemetry.rejected("costly_queue_full")
                raise result
        # no exception is left in results (raised above); inspect gives EncodedImage, decode arrays
        if cfg.decode == "gpu":
            return cast(list[EncodedImage], results)
        arrays = cast(list[np.ndarray], results)
        if len(arrays) == 1:
            return arrays[0][None]
        return np.stack(arrays)

    async def _decode_one(
        self, model: ServedModel, cfg: PreprocessConfig, data: bytes
    ) -> np.ndarray | EncodedImage:
        """One image in the decode pool: header and limits first; a cheap image is decoded in
        the same step, a costly one (app/decode_limits.py) waits for a costly slot, or is
        refused at once (503) when too many wait."""
        loop = asyncio.get_running_loop()
        timer, limits = model.telemetry.preprocess, self.decode_limits

        gpu = cfg.decode == "gpu"

        def first(data: bytes) -> np.ndarray | EncodedImage | None:
            t0 = time.perf_counter()
            img, cost = open_checked(data, limits)  # a refusal here is not timed
            if gpu and gpu_decodable(img):
                result: np.ndarray | EncodedImage = inspect(data, cfg, limits)  # nvJPEG's
            elif cost > limits.costly_cost:
                return None  # timed once, when decode_costly runs
            else:
                pixels = decode_opened(img, cfg)
                result = EncodedImage(pixels=pixels) if gpu else pixels
            timer.observe(time.perf_counter() - t0)
            return result

        def costly(data: bytes) -> np.ndarray | EncodedImage:
            t0 = time.perf_counter()
            try:
                pixels = decode_opened(open_checked(data, limits)[0], cfg)
                return EncodedImage(pixels=pixels) if gpu else pixels
            finally:
                timer.observe(time.perf_counter() - t0)

        result = await loop.run_in_executor(self.decode_pool, first, data)
        if result is not None:
            return result
        await self.decode_gate.costly_slot()
        try:
            return await loop.run_in_executor(self.costly_pool, costly, data)
        finally:
            await self.decode_gate.costly_done()

    async def infer(
        self,
        model: ServedModel,
        batch: Batch,
        deadline: float,
        disconnected: Disconnected | None = None,
    ) -> np.ndarray:
        """uint8 (N, H, W, 3) (or N EncodedImage from decode_images) -> logits (N, C), within
        the deadline, cancelled if the client leaves. Raises QueueFull / ModelNotReady at once,
        DeadlineExceeded, ClientGone."""
        # checked against the model that will run it: a version replaced by a reload forwards
        # its requests to its successor, whose input size may differ
        crop = model.successor().config.input.crop
        expected = (crop, crop, 3)
        if isinstance(batch, list):
            if not all(isinstance(im, EncodedImage) for im in batch):
                raise TypeError("an image list must hold EncodedImage (from decode_images)")
            if any(im.pixels is not None and im.pixels.shape != expected for im in batch):
                raise InvalidInput(
                    f"model {model.name!r} now takes {list(expected)} images (it was reloaded "
                    "while this request was decoded): send it again"
                )
        elif batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != expected:
            raise InvalidInput(
                f"model {model.name!r} takes uint8 images of shape {list(expected)}; "
                f"got {batch.dtype} {list(batch.shape[1:])}"
            )
        self.check_image_count(len(batch))  # every request, whatever its protocol
        # No await from here to submit(): the request binds to the instances serving now, so a
        # reload switching them (ModelRepository.load) never strands it. This is the readiness
        # check of every request; earlier ones only spare a request that would fail here its
        # decoding.
        batcher = model.require_ready()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            model.telemetry.rejected("deadline")
            raise DeadlineExceeded("deadline passed before the request reached the queue")
        record = observed.current()
        if record is not None:  # the batcher's WorkItems take it from here
            record.at_model(model.name, model.config.version)
            record.submitted(len(batch))
        result = asyncio.ensure_future(batcher.submit(batch, deadline))
        waiters: set[asyncio.Future[Any]] = {result}
        gone = asyncio.ensure_future(disconnected()) if disconnected is not None else None
        if gone is not None:
            waiters.add(gone)
        try:
            done, _ = await asyncio.wait(
                waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:
            result.cancel()
            raise
        finally:
            if gone is not None:
                gone.cancel()
        if result in done:
            try:
                return result.result()
            except DeadlineExceeded:  # expired in the queue
                model.telemetry.rejected("deadline")
                raise
        result.cancel()
        if gone is not None and gone in done:
            raise ClientGone()
        model.telemetry.rejected("deadline")
        raise DeadlineExceeded("the request's deadline passed before its result was ready")

    async def classify(
        self,
        model: ServedModel,
        images: list[bytes],
        k: int,
        timeout_ms: float | None = None,
        disconnected: Disconnected | None = None,
    ) -> list[list[Prediction]]:
        """Encoded images -> their top-k predictions. `model`: from model(name), resolved
        before the request's body was read (its 404 costs no upload)."""
        deadline = self.deadline(timeout_ms)
        self.check_top_k(k)
        model.require_ready()  # early: a model that is not ready costs no decoding
        batch = await self.decode_images(model, images)
        logits = await self.infer(model, batch, deadline, disconnected)
        return self.predictions(model, logits, k)

    @staticmethod
    def predictions(model: ServedModel, logits: np.ndarray, k: int) -> list[list[Prediction]]:
        indices, probs = top_k(logits, k)
        return [
            [
                Prediction(int(i), model.config.label(int(i)), float(p))
                for i, p in zip(row_i, row_p, strict=True)
            ]
            for row_i, row_p in zip(indices, probs, strict=True)
        ]
