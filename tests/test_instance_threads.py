"""Each instance is loaded, warmed up and run on one thread of its own: CUDA graphs (torch.compile
mode reduce-overhead) and other per-thread state recorded at warm-up then serve its batches."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from app.backends import REGISTRY
from app.config import BatchingConfig
from app.metrics import Metrics
from app.repository import ModelRepository
from tests.fakes import FakeBackend, fake_config


class ThreadRecordingBackend(FakeBackend):
    name = "thread-recording"
    threads: dict[int, dict[str, set[int]]] = {}

    def _mine(self) -> dict[str, set[int]]:
        return ThreadRecordingBackend.threads.setdefault(id(self), {})

    def load(self) -> None:
        self._mine().setdefault("load", set()).add(threading.get_ident())

    def warmup(self, batch_sizes: list[int]) -> None:
        self._mine().setdefault("warmup", set()).add(threading.get_ident())
        for n in batch_sizes:
            self.infer(np.zeros((n, 224, 224, 3), np.uint8))

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self._mine().setdefault("infer", set()).add(threading.get_ident())
        time.sleep(0.005)  # both instances get work
        return super().infer(batch)


async def test_each_instance_warms_up_on_the_thread_that_runs_its_batches() -> None:
    REGISTRY["thread-recording"] = f"{__name__}:ThreadRecordingBackend"
    ThreadRecordingBackend.threads.clear()
    cfg = fake_config(
        "threads",
        backend="thread-recording",
        batching=BatchingConfig(instances=2, max_batch_size=4),
    )
    repo = ModelRepository([cfg], Metrics())
    await repo.load_all()
    model = repo.get("threads")
    assert model.ready, model.reason
    loader = threading.get_ident()
    batcher = model.require_ready()
    rows = np.full((1, 224, 224, 3), 7, np.uint8)
    await asyncio.gather(*(batcher.submit(rows, time.monotonic() + 10) for _ in range(40)))
    await repo.close()
    records = list(ThreadRecordingBackend.threads.values())
    assert len(records) == 2
    for rec in records:
        (thread,) = rec["warmup"]
        assert rec["load"] == {thread} and rec["infer"] == {thread}, rec
        assert thread != loader
    assert records[0]["warmup"] != records[1]["warmup"]  # a thread per instance
