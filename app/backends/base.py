"""The one interface every backend implements. Backends import only app.backends and the
foundation below them (app.config, app.errors, app.preprocess): nothing of the batcher, the
repository, the data plane or the adapters (tests/test_layout.py).

A backend owns one loaded model on one device and runs whole batches: uint8 NHWC in, float32
logits out (first axis is the batch). It normalises on its own device, in its own precision.

A model with input.decode "gpu" hands its backend encoded images instead (infer_encoded):
backends that can decode on their device say so with `gpu_decode = True` and override it; the
default decodes on the CPU and calls infer().

A backend also says, before anything is loaded, what the rest of the server and the offline
tools need to know of it (class-level, from a ModelConfig alone): its Triton `platform` name
(V2 metadata and config), the file key it loads for a precision (`file_key`, `model_file`),
the precisions a model's files let it serve (`precisions`), and the configurations
`resnet-serve check` should try (`check_candidates`, each with why it cannot run here), and
where its inference-thread count lives in a ModelConfig (`thread_option`, for the thread
budget). Adding a backend is this one file plus a registry line (or a plugin): nothing else keeps a
table of backends.
"""

from __future__ import annotations

import abc
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

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


PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16", "int8")


@dataclass(frozen=True)
class Candidate:
    """One configuration of a backend that `resnet-serve check` should try on a model."""

    precision: str
    # ModelConfig fields to set on top of backend, precision and device (ModelConfig.variant)
    overrides: dict[str, Any] = field(default_factory=dict)
    asked: str = ""  # what was asked for, shown before the run says what really ran
    skip: str | None = None  # why it cannot run here (None: it can)


class Backend(abc.ABC):
    """Load once, warm up, run batches from one thread at a time, close."""

    name: ClassVar[str] = "base"
    # Triton's platform name for what the backend runs (V2 metadata and model config); a
    # subclass that sets `name` but not `platform` reports its name.
    platform: ClassVar[str] = "base"
    gpu_decode: ClassVar[bool] = False  # True: infer_encoded decodes on the model's own device
    # The precisions the backend can run at all; `precisions()` keeps those a model has files for.
    supported_precisions: ClassVar[tuple[str, ...]] = PRECISIONS
    # Where the backend keeps its inference-thread count in ModelConfig, (section, field), e.g.
    # ("onnxruntime", "intra_op_threads"); None: it has none, and the thread budget
    # (app/threads.py) leaves its threads alone.
    thread_option: ClassVar[tuple[str, str] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__ and "platform" not in cls.__dict__:
            cls.platform = cls.name

    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    # ------------------------------------------------------------- what it is, before load
    @classmethod
    def file_key(cls, precision: str) -> str:
        """The key in ModelConfig.files of the file this backend loads at `precision`."""
        return cls.name if precision == "fp32" else f"{cls.name}-{precision}"

    @classmethod
    def model_file(cls, config: ModelConfig) -> str:
        """The file name (relative to the model directory) this backend loads for `config`,
        or "" when the model has none."""
        return config.files.get(cls.file_key(config.precision), "")

    @classmethod
    def precisions(cls, files: Mapping[str, str]) -> list[str]:
        """The precisions this backend can serve from a model's files (ModelConfig.files)."""
        return [p for p in cls.supported_precisions if cls.file_key(p) in files]

    @classmethod
    def unavailable(cls, precision: str, device: str) -> str | None:
        """Why this backend cannot run `precision` on `device` on this machine (None: it can)."""
        return None

    @classmethod
    def check_candidates(cls, config: ModelConfig, device: str) -> list[Candidate]:
        """The configurations `resnet-serve check` should try for a model on `device`: one per
        precision its files allow, each with why it cannot run here."""
        return [Candidate(p, skip=cls.unavailable(p, device)) for p in cls.precisions(config.files)]

    @classmethod
    def wide_config(cls, config: ModelConfig, threads: int) -> ModelConfig | None:
        """The adaptive scheduler's wide runner (app/scheduling.py): `config` run one batch at
        a time on all `threads` of the model's cores, in the backend's latency mode; None when
        the backend has no such mode on the config's device (the scheduler stays static: the
        default, so torch backends, GPUs and plugins keep a free instance taking the queue).
        The load checks that its answers equal an instance's, bit for bit."""
        return None

    def input_shape(self) -> tuple[int, int, int]:
        """One image as the backend takes it, without the batch axis: (H, W, 3) uint8."""
        size = self.config.input.crop
        return (size, size, 3)

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

        batch = np.zeros((pad_to, *self.input_shape()), np.uint8)
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

    def take_decode_fallbacks(self) -> dict[str, int]:
        """Images infer_encoded meant to decode on the device but decoded on the CPU, by reason,
        since the last call (the batcher counts them in /metrics). The CPU default has none."""
        return {}

    def info(self) -> BackendInfo:
        """Describe the loaded model (valid after load())."""
        return BackendInfo(
            name=self.name,
            device=self.active_device(),
            precision=self.config.precision,
            input_shape=self.input_shape(),
            input_dtype="uint8",
            max_batch_size=self.config.batching.max_batch_size,
            num_classes=self.config.num_classes,
            providers=self.active_providers(),
            details=self.details(),
        )

    def active_device(self) -> str:
        return self.config.device

    def active_providers(self) -> list[str]:
        """The execution providers actually running the model (not those asked for); this
        default names the backend and the kind of device, e.g. ["mybackend-cpu"]."""
        return [f"{self.name}-{self.config.device.split(':')[0]}"]

    def details(self) -> dict[str, Any]:
        return {}

    def warmup(self, batch_sizes: list[int]) -> None:
        """Run every batch size the batcher can form once, so no request pays for lazy
        initialisation or autotuning of a new shape."""
        rng = np.random.default_rng(0)
        for n in batch_sizes:
            batch = rng.integers(0, 256, size=(n, *self.input_shape()), dtype=np.uint8)
            out = self.infer(batch)
            if out.shape != (n, self.config.num_classes):
                raise RuntimeError(
                    f"{self.name} returned shape {out.shape} for a batch of {n}; "
                    f"expected ({n}, {self.config.num_classes})"
                )

    def close(self) -> None:  # noqa: B027 - optional hook: most backends hold nothing to free
        """Release the model and any device memory."""
