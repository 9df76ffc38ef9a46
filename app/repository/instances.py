"""Building one model's instances within the process's thread budget: plan the budget
(app/threads.py), create, load and warm up every instance on the thread that will run its
batches, start the batcher over them; and retiring them: drain, close, give the memory back."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from app.backends import Backend, BackendInfo, backend_class, create_backend
from app.batching import DynamicBatcher, instance_executor
from app.config import ModelConfig
from app.metrics import ModelTelemetry
from app.placement import instance_configs
from app.scheduling import Schedule, first_difference, measure, timed, wide_batch_limit
from app.threads import ThreadBudget, apply, plan

log = logging.getLogger(__name__)


@dataclass
class Instances:
    """One built model: its loaded, warmed instances and the started batcher over them."""

    config: ModelConfig
    backends: list[Backend]
    batcher: DynamicBatcher
    info: BackendInfo
    load_seconds: float
    budget: ThreadBudget | None = None  # the thread budget it was built with


@dataclass
class InstanceBuilder:
    """Builds one model's instances within this process's thread budget: its cores (divided by
    `workers`) shared with the decode pool of `decode_threads` threads."""

    cores: int  # usable cores of the machine (the budget divides them by workers)
    workers: int = 1
    retry_after_s: float = 1.0  # the Retry-After of a full queue, for the batcher
    decode_threads: int = 0  # the process's decode pool (0: not known yet)
    decode_source: str = "budget"  # where decode_threads came from: "budget" or "config"
    # the images the process is decoding now (the DataPlane's decode gate), for the batchers
    decoding: Callable[[], int] | None = None

    async def build(
        self, cfg: ModelConfig, telemetry: ModelTelemetry, on_health_change: Callable[[], None]
    ) -> Instances:
        """Load, warm up and start one model (its batcher running) beside whatever serves."""
        if cfg.weights_fallback:
            log.warning(
                "model %s serves RANDOM weights (ImageNet weights could not be downloaded at "
                "export): its predictions are meaningless",
                cfg.name,
            )
        budget = plan(cfg, self.cores, self.workers, self.decode_threads, self.decode_source)
        cfg = apply(cfg, budget)
        log.info(
            "thread budget: model %s: %d instance(s) (%s) x %s inference thread(s) (%s)",
            cfg.name,
            budget.instances,
            budget.source["instances"],
            budget.inference_threads or "default",
            budget.source["inference_threads"],
        )
        started = time.perf_counter()
        backends, info, executors = await asyncio.to_thread(load_instances, cfg)
        schedule, wide = await asyncio.to_thread(build_schedule, cfg, budget, backends, executors)
        batcher = DynamicBatcher(
            cfg.name,
            backends,
            cfg.batching,
            telemetry,
            pad_to_bucket=cfg.pads_to_bucket,
            retry_after_s=self.retry_after_s,
            executors=executors,
            on_health_change=on_health_change,
            schedule=schedule,
            wide=wide,
            decoding=self.decoding,
        )
        batcher.start()
        seconds = round(time.perf_counter() - started, 3)
        log.info(
            "model %s version %s ready in %.1f s: backend %s on %s (%s), providers %s, "
            "%d instance(s)",
            cfg.name,
            cfg.version,
            seconds,
            cfg.backend,
            info.device,
            cfg.precision,
            info.providers,
            len(backends),
        )
        return Instances(cfg, backends, batcher, info, seconds, budget)


async def retire(old: list[Instances]) -> None:
    """Finish what the old instances accepted, then release them."""

    async def one(instances: Instances) -> None:
        await instances.batcher.close()
        await asyncio.to_thread(close_all, instances.backends)
        instances.backends.clear()

    await asyncio.gather(*(one(o) for o in old))
    if old:
        await asyncio.to_thread(return_freed_memory)


def load_instances(
    config: ModelConfig,
) -> tuple[list[Backend], BackendInfo, list[ThreadPoolExecutor]]:
    """Blocking: create, load and warm up every instance of one model, each on the thread that
    will run its batches (CUDA graphs recorded by torch.compile's reduce-overhead mode, and
    other per-thread state, then serve the batches instead of being recorded again)."""
    backends: list[Backend] = []
    executors: list[ThreadPoolExecutor] = []
    sizes = config.batching.bucket_sizes()
    try:
        for i, instance in enumerate(instance_configs(config)):
            executor = instance_executor(config.name, i)
            executors.append(executor)
            backend = create_backend(instance)
            backends.append(backend)
            executor.submit(_load_and_warm_up, backend, sizes).result()
    except BaseException:
        for b in backends:
            close_quietly(b)
        for e in executors:
            e.shutdown(wait=False)
        raise
    return backends, backends[0].info(), executors


def _load_and_warm_up(backend: Backend, sizes: list[int]) -> None:
    backend.load()
    backend.warmup(sizes)


def build_schedule(
    config: ModelConfig,
    budget: ThreadBudget | None,
    backends: list[Backend],
    executors: list[ThreadPoolExecutor],
) -> tuple[Schedule, tuple[Backend, ThreadPoolExecutor] | None]:
    """Blocking: the adaptive scheduler's wide runner of a loaded model, loaded and warmed up on
    a thread of its own, and the per-batch times of the instances (all running at once, as
    under load) and of the wide runner, measured after warm-up on the same images. Static (and
    why) when the model asks for it, when its backend has no wide runner on its device, when
    one instance already holds every core, when the wide runner fails to load, or when its
    answers differ from an instance's in any bit. Never fails the model: the instances serve
    either way."""
    limit = config.batching.max_batch_size
    threads = budget.inference_threads if budget is not None else 0
    cores = threads * len(backends)

    def static(reason: str) -> tuple[Schedule, None]:
        log.info("scheduler: model %s: static (%s)", config.name, reason)
        return Schedule("static", reason, cores, threads, max_batch_size=limit), None

    if config.batching.scheduler == "static":
        return static("batching.scheduler is static")
    wide_config = backend_class(config.backend).wide_config(config, cores) if threads else None
    if wide_config is None:
        return static(f"backend {config.backend} has no wide runner on {config.device}")
    if len(backends) < 2:
        return static(f"one instance already holds all {cores} cores")
    sizes = config.batching.bucket_sizes()
    executor = ThreadPoolExecutor(1, thread_name_prefix=f"{config.name}-wide")
    wide: Backend | None = None
    try:
        wide = create_backend(wide_config)
        executor.submit(_load_and_warm_up, wide, sizes).result()
        rng = np.random.default_rng(1)
        batch = rng.integers(0, 256, (limit, *backends[0].input_shape()), dtype=np.uint8)
        (narrow_raw, narrow_out), (wide_raw, wide_out) = measure(
            [side_by_side(executors, backends), on_thread(executor, wide)], batch, sizes
        )
        differs = first_difference(narrow_out, wide_out)
        narrow_t, wide_t = narrow_raw.plausible(), wide_raw.plausible()
        if (narrow_t, wide_t) != (narrow_raw, wide_raw):
            log.warning(
                "scheduler: model %s: the warm-up's times were inconsistent (a busy machine?): "
                "instance %s, wide %s; using the consistent figures below",
                config.name,
                narrow_raw.as_ms(),
                wide_raw.as_ms(),
            )
    except Exception as exc:
        differs = f"the wide runner failed: {type(exc).__name__}: {exc}"
        log.warning("scheduler: model %s: %s", config.name, differs)
    else:
        if differs is not None:
            differs = f"the wide runner's answers differ from an instance's: {differs}"
            log.warning("scheduler: model %s: %s", config.name, differs)
    if differs is not None:
        if wide is not None:
            close_quietly(wide)
        executor.shutdown(wait=False)
        return static(differs)
    schedule = Schedule(
        "adaptive",
        cores=cores,
        narrow_threads=threads,
        wide_threads=cores,
        narrow=narrow_t,
        wide=wide_t,
        max_batch_size=limit,
        wide_max_batch=wide_batch_limit(config.batching.wide_max_batch, len(backends), limit),
    )
    log.info(
        "scheduler: model %s: adaptive over %d cores: %d instance(s) x %d thread(s) and a wide "
        "runner of %d for batches of up to %d; ms per batch, by batch size: instance %s, "
        "wide %s; batch cap %d / %d",
        config.name,
        cores,
        len(backends),
        threads,
        cores,
        schedule.wide_limit,
        narrow_t.as_ms(),
        wide_t.as_ms(),
        narrow_t.cap(limit),
        wide_t.cap(schedule.wide_limit),
    )
    assert wide is not None
    return schedule, (wide, executor)


def on_thread(
    executor: ThreadPoolExecutor, backend: Backend
) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """One timed call of `backend` on its own thread (scheduling.measure's runner)."""
    return lambda x: executor.submit(timed, backend.infer, x).result()


def side_by_side(
    executors: list[ThreadPoolExecutor], backends: list[Backend]
) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """One timed call of every instance at once, each on its own thread, as they run under
    load: the mean of their times, and the first one's output. Timed alone, an instance
    has the memory bandwidth and the shared cache to itself, and batching looks useless
    where it is not: ResNet-50 int8 on one AVX2 core took 48-49 ms per image at every batch
    size alone, and served batches of 1 gave 17 % less at c=16 than the static scheduler's
    batches of up to 8 (2026-12-04, docs/benchmarks.md)."""

    def run(x: np.ndarray) -> tuple[float, np.ndarray]:
        calls = [e.submit(timed, b.infer, x) for e, b in zip(executors, backends, strict=True)]
        results = [c.result() for c in calls]
        return sum(t for t, _ in results) / len(results), results[0][1]

    return run


def close_quietly(backend: Backend) -> None:
    try:
        backend.close()
    except Exception as exc:
        log.warning("closing %s failed: %s", backend.name, exc)


def return_freed_memory() -> None:
    """Hand the heap a released model leaves behind back to the OS (glibc keeps it otherwise,
    so repeated reloads look like a leak in RSS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def close_all(backends: list[Backend]) -> None:
    for b in backends:
        close_quietly(b)
