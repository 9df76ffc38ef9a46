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

from app.backends import Backend, BackendInfo, create_backend
from app.batching import DynamicBatcher, instance_executor
from app.config import ModelConfig
from app.metrics import ModelTelemetry
from app.placement import instance_configs
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
        batcher = DynamicBatcher(
            cfg.name,
            backends,
            cfg.batching,
            telemetry,
            pad_to_bucket=cfg.pads_to_bucket,
            retry_after_s=self.retry_after_s,
            executors=executors,
            on_health_change=on_health_change,
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
