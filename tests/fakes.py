"""A fake backend for tests of everything above the backend: batching, the data plane, the API.

Its logits are a pure function of each image (class j scores -|mean(image) - j|), so every
request can check it got its own row back. It records the batch sizes it saw and can be told
to sleep, fail or hang, per model, through FakeBackend.behaviour.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.backends import REGISTRY
from app.backends.base import Backend
from app.config import ModelConfig


@dataclass
class Behaviour:
    delay_s: float = 0.0
    hold: threading.Event | None = None  # set: every infer() waits for it (ordering in tests)
    fail: Callable[[np.ndarray], bool] | None = None  # raise when it returns True
    fail_load: bool = False
    batches: list[int] = field(default_factory=list)
    concurrent: int = 0
    max_concurrent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeBackend(Backend):
    name = "fake"
    behaviour: dict[str, Behaviour] = {}

    def _b(self) -> Behaviour:
        return FakeBackend.behaviour.setdefault(self.config.name, Behaviour())

    def load(self) -> None:
        if self._b().fail_load:
            raise RuntimeError("fake load failure")

    def warmup(self, batch_sizes: list[int]) -> None:  # keep tests' batch records clean
        pass

    def infer(self, batch: np.ndarray) -> np.ndarray:
        b = self._b()
        with b.lock:
            b.batches.append(int(batch.shape[0]))
            b.concurrent += 1
            b.max_concurrent = max(b.max_concurrent, b.concurrent)
        try:
            if b.hold is not None:
                b.hold.wait(30)
            if b.delay_s:
                time.sleep(b.delay_s)
            if b.fail is not None and b.fail(batch):
                raise RuntimeError("fake backend failure")
            self._inject_faults(batch)
            return expected_logits(batch, self.config.num_classes)
        finally:
            with b.lock:
                b.concurrent -= 1

    def _inject_faults(self, batch: np.ndarray) -> None:
        """Faults chosen by config.options, so a real server process can be told to fail:
        an image whose mean grey level is in fail_on raises, in hang_on sleeps hang_s, in
        oom_on raises MemoryError; delay_s slows every batch."""
        opts = self.config.options
        if not opts:
            return
        time.sleep(float(opts.get("delay_s", 0.0)))
        greys = {int(round(m)) for m in batch.reshape(batch.shape[0], -1).mean(axis=1)}
        if greys & set(opts.get("fail_on", [])):
            raise RuntimeError("injected backend failure")
        if greys & set(opts.get("oom_on", [])):
            raise MemoryError("injected out of memory")
        if greys & set(opts.get("hang_on", [])):
            time.sleep(float(opts.get("hang_s", 5.0)))

    def active_providers(self) -> list[str]:
        return ["fake"]


def expected_logits(batch: np.ndarray, num_classes: int) -> np.ndarray:
    means = batch.reshape(batch.shape[0], -1).mean(axis=1, dtype=np.float64)
    classes = np.arange(num_classes, dtype=np.float64)
    return (-np.abs(means[:, None] - classes[None, :])).astype(np.float32)


def fake_config(name: str = "fake", **overrides: object) -> ModelConfig:
    data: dict[str, object] = {
        "name": name,
        "backend": "fake",
        "num_classes": 256,
        "labels": [f"grey{i}" for i in range(256)],
    }
    data.update(overrides)
    return ModelConfig.model_validate(data)


PLUGIN = "fake=tests.fakes:FakeBackend"


def register() -> None:
    REGISTRY["fake"] = "tests.fakes:FakeBackend"


def write_fake_model(repo: Path, name: str = "fake", **overrides: object) -> Path:
    """A model directory served by the fake backend (start the server with the plugin env)."""
    directory = repo / name
    directory.mkdir(parents=True, exist_ok=True)
    fake_config(name, **overrides).write(directory)
    return directory
