"""The one interface every backend implements. Backends import app.config, and the torch ones
app.backends.torch.models (the torch helpers export shares); nothing above the batcher, nothing of HTTP.

A backend owns one loaded model on one device and runs whole batches: uint8 NHWC in, float32
logits out (first axis is the batch). It normalises on its own device, in its own precision.

A model with input.decode "gpu" hands its backend encoded images instead (infer_encoded):
backends that can decode on their device say so with `gpu_decode = True` and override it; the
default decodes on the CPU and calls infer().
"""

from __future__ import annotations

import abc
import sys
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from app.config import ModelConfig
from app.errors import ServeError

if TYPE_CHECKING:
    from app.preprocess import EncodedImage


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
    gpu_decode: bool = False  # True: infer_encoded decodes on the model's own device

    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    @abc.abstractmethod
    def load(self) -> None:
        """Read the model file and put it on its device. Raises on any failure."""

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) -> float32 logits (N, num_classes)."""

    def infer_encoded(
        self, images: list[EncodedImage], pad_to: int
    ) -> tuple[np.ndarray, dict[int, Exception]]:
        """Images still encoded (or some already decoded) -> (logits of pad_to rows, {row:
        error} of images that could not be decoded; their rows are zeros and are not answered).

        This default decodes on the CPU, on the instance's thread; GPU backends override it."""
        from app.preprocess import decode  # the CPU decoder (Pillow)

        batch = np.zeros((pad_to, *self._input_shape()), np.uint8)
        errors: dict[int, Exception] = {}
        for i, img in enumerate(images):
            if img.pixels is not None:
                batch[i] = img.pixels
                continue
            try:  # the header (and pixel limit) was checked before the image was queued
                batch[i] = decode(img.data or b"", self.config.input, sys.maxsize)
            except ServeError as exc:
                errors[i] = exc
        return self.infer(batch), errors

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
        if self.config.input.decode == "gpu":
            self._warmup_encoded(batch_sizes)

    def _warmup_encoded(self, batch_sizes: list[int]) -> None:
        """Decode a real JPEG at every batch size: nvJPEG's first batch and each new image
        size's resize kernels are not paid for by a client."""
        import io

        from PIL import Image

        from app.preprocess import EncodedImage

        rng = np.random.default_rng(0)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(buf, "JPEG")
        jpeg = EncodedImage(data=buf.getvalue(), width=500, height=375)
        for n in batch_sizes:
            out, errors = self.infer_encoded([jpeg] * n, n)
            if errors or out.shape[0] != n:
                raise RuntimeError(f"{self.name}: GPU decode warm-up failed at batch {n}: {errors}")

    def close(self) -> None:
        """Release the model and any device memory."""

    def _input_shape(self) -> tuple[int, int, int]:
        size = self.config.input.crop
        return (size, size, 3)
