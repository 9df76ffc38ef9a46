"""The one interface every backend implements. Backends import only app.errors and app.config.

A backend owns one loaded model on one device and runs whole batches: uint8 NHWC in, float32
logits out (first axis is the batch). It normalises on its own device, in its own precision.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from app.config import ModelConfig


@dataclass(frozen=True)
class BackendInfo:
    """What a backend says of itself once loaded: facts, not what was asked for."""

    name: str
    device: str
    precision: str
    input_shape: tuple[int, ...]  # per image, without the batch axis: (H, W, 3)
    input_dtype: str
    max_batch_size: int
    num_classes: int
    providers: list[str] = field(default_factory=list)  # execution providers actually active
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Backend(abc.ABC):
    """Load once, warm up, run batches from one thread at a time, close."""

    name: str = "base"

    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    @abc.abstractmethod
    def load(self) -> None:
        """Read the model file and put it on its device. Raises on any failure."""

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) -> float32 logits (N, num_classes)."""

    def info(self) -> BackendInfo:
        """Describe the loaded model (valid after load())."""
        return BackendInfo(
            name=self.name,
            device=self.active_device(),
            precision=self.config.precision,
            input_shape=self._input_shape(),
            input_dtype="uint8",
            max_batch_size=self.config.batching.max_batch_size,
            num_classes=self.config.num_classes,
            providers=self.active_providers(),
            details=self.details(),
        )

    def active_device(self) -> str:
        return self.config.device

    def active_providers(self) -> list[str]:
        return [f"torch-{self.config.device.split(':')[0]}"]

    def details(self) -> dict[str, Any]:
        return {}

    def warmup(self, batch_sizes: list[int]) -> None:
        """Run every batch size the batcher can form once, so no request pays for lazy
        initialisation or autotuning of a new shape."""
        size = self.config.input.crop
        rng = np.random.default_rng(0)
        for n in batch_sizes:
            batch = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
            out = self.infer(batch)
            if out.shape != (n, self.config.num_classes):
                raise RuntimeError(
                    f"{self.name} returned shape {out.shape} for a batch of {n}; "
                    f"expected ({n}, {self.config.num_classes})"
                )

    def close(self) -> None:
        """Release the model and any device memory."""

    def _input_shape(self) -> tuple[int, int, int]:
        size = self.config.input.crop
        return (size, size, 3)
