"""Thread budgets: how many instances each model runs, how many inference threads each
instance uses, and how many threads decode images, so that together they fit the cores this
process may really use. config.json (and RESNET_SERVE_DECODE_THREADS) override every figure;
0 means "from the budget".

The rule (one server process with C usable cores, C = min(CPU affinity, cgroup CPU quota),
divided by `workers` when several server processes share the port):

- a model on the CPU: instances = min(C, max(2, C // 8)); inference threads per instance =
  C // instances. So 2 instances of C/2 threads up to 16 cores, then one instance per 8 cores.
- a model on a GPU: the configured instances (default 1) and 1 inference thread each (the CPU
  only feeds the GPU; ONNX Runtime's CPU fallback then also stays at one thread).
- decode threads (per process, shared by every model): max(1, C // 4) when any model infers on
  the CPU, else C (on GPU servers decoding is the CPU's only job).

Each model's budget assumes it is the one under load: a server that loads several models at
once on the CPU should set `instances` and the threads per model in config.json. Where a
backend keeps its thread count is the backend's own fact (Backend.thread_option). Why these
figures, and what they were measured on: docs/design-notes.md, "Thread budgets".
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from app.backends import known_backend
from app.config import ModelConfig

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Cores:
    usable: int  # min(affinity, cgroup quota rounded up), at least 1
    affinity: int
    cgroup_quota: float | None  # CPUs' worth of the cgroup quota, None when unlimited


@dataclass(frozen=True)
class ThreadBudget:
    """One model's budget in one server process, with where each figure came from."""

    cores: int  # usable cores of this process (the machine's, divided by workers)
    workers: int
    instances: int
    inference_threads: int  # per instance; 0: the backend has no thread option
    decode_threads: int  # the process's decode pool, shared by every model
    source: dict[str, str]  # figure -> "budget" or "config"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cgroup_cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs' worth of this cgroup's CPU quota (v2 cpu.max, or v1 cfs quota/period), or None."""
    try:
        fields = (root / "cpu.max").read_text().split()
        if fields and fields[0] != "max":
            return int(fields[0]) / int(fields[1])
        if fields:
            return None
    except (OSError, ValueError, IndexError):
        pass
    for v1 in (root / "cpu", root / "cpu,cpuacct"):
        try:
            quota = int((v1 / "cpu.cfs_quota_us").read_text())
            period = int((v1 / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota / period if quota > 0 and period > 0 else None
    return None


def usable_cores(root: Path = CGROUP_ROOT) -> Cores:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = os.cpu_count() or 1
    quota = cgroup_cpu_quota(root)
    usable = affinity if quota is None else min(affinity, math.ceil(quota))
    return Cores(max(1, usable), affinity, quota)


def thread_option(config: ModelConfig) -> tuple[str, str] | None:
    """Where the model's backend keeps its inference-thread count (Backend.thread_option);
    None for a backend without one, or one that cannot be had here."""
    cls = known_backend(config.backend)
    return cls.thread_option if cls is not None else None


def cpu_instances(cores: int) -> int:
    return max(1, min(cores, max(2, cores // 8)))


def plan(
    config: ModelConfig,
    cores: int,
    workers: int = 1,
    decode_threads: int = 0,
    decode_source: str = "budget",
) -> ThreadBudget:
    """The budget of one model in one of `workers` processes sharing `cores` cores.
    `decode_threads` is the process's decode pool size (see decode_pool_size)."""
    per_process = max(1, cores // max(1, workers))
    source: dict[str, str] = {"decode_threads": decode_source}
    if config.batching.instances:
        instances, source["instances"] = config.batching.instances, "config"
    else:
        instances = 1 if config.is_cuda else cpu_instances(per_process)
        source["instances"] = "budget"
    option = thread_option(config)
    if option is None:
        threads, source["inference_threads"] = 0, "backend has no thread option"
    elif getattr(getattr(config, option[0]), option[1]):
        threads, source["inference_threads"] = (
            getattr(getattr(config, option[0]), option[1]),
            "config",
        )
    else:
        threads = 1 if config.is_cuda else max(1, per_process // instances)
        source["inference_threads"] = "budget"
    return ThreadBudget(per_process, workers, instances, threads, decode_threads, source)


def apply(config: ModelConfig, budget: ThreadBudget) -> ModelConfig:
    """A copy of `config` with the budget's instances and inference threads filled in."""
    update: dict[str, Any] = {
        "batching": config.batching.model_copy(update={"instances": budget.instances})
    }
    option = thread_option(config)
    if option is not None and budget.inference_threads:
        section, field = option
        update[section] = getattr(config, section).model_copy(
            update={field: budget.inference_threads}
        )
    return config.model_copy(update=update)


def decode_pool_size(configured: int, configs: list[ModelConfig], cores: int, workers: int) -> int:
    """Threads of one process's decode pool: `configured` when set, else the rule above."""
    if configured:
        return configured
    per_process = max(1, cores // max(1, workers))
    on_cpu = not configs or any(not c.is_cuda for c in configs)
    return max(1, per_process // 4) if on_cpu else per_process


def log_process_budget(
    cores: Cores, decode_threads: int, configs: list[ModelConfig], workers: int
) -> int:
    """The process's decode pool size (decode_pool_size), logged with the cores it plans for;
    each model's own budget is planned and logged when it is built (app/repository/instances.py)."""
    pool = decode_pool_size(decode_threads, configs, cores.usable, workers)
    quota = "none" if cores.cgroup_quota is None else f"{cores.cgroup_quota:g} CPUs"
    log.info(
        "thread budget: %d usable cores (affinity %d, cgroup quota %s), %d worker(s): "
        "%d decode thread(s) (%s)",
        cores.usable,
        cores.affinity,
        quota,
        workers,
        pool,
        "config" if decode_threads else "budget",
    )
    return pool
