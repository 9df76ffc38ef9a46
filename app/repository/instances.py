"""Building one model's instances: create, load and warm up every instance on the thread that
will run its batches; close them and give their memory back."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from app.backends import Backend, BackendInfo, create_backend
from app.batching import DynamicBatcher, bucket_sizes, instance_executor
from app.config import ModelConfig
from app.placement import instance_configs
from app.threads import ThreadBudget

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


def load_instances(
    config: ModelConfig,
) -> tuple[list[Backend], BackendInfo, list[ThreadPoolExecutor]]:
    """Blocking: create, load and warm up every instance of one model, each on the thread that
    will run its batches (CUDA graphs recorded by torch.compile's reduce-overhead mode, and
    other per-thread state, then serve the batches instead of being recorded again)."""
    backends: list[Backend] = []
    executors: list[ThreadPoolExecutor] = []
    sizes = bucket_sizes(config.batching.max_batch_size)
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
