"""What the two torch backends share: a TorchRunner on the model's device (its own CUDA stream,
pinned staging buffer, GPU JPEG decoding when configured), the warm-up of that decoding, and
what runs where (fp16 needs a GPU, bf16 needs bf16 instructions). Each backend only says how
to build its module and which files it reads."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

import numpy as np

from app.backends.base import Backend

if TYPE_CHECKING:
    from app.backends.torch.models import TorchRunner
    from app.preprocess import EncodedImage


NO_GPU_FP16 = "fp16 needs a CUDA device (pass --device cuda:0 on a GPU machine)"


def bf16_support(device: str) -> str | None:
    """None when bf16 runs natively on `device`, else why not."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if device.startswith("cuda"):
        return None if torch.cuda.is_bf16_supported() else "this GPU has no bf16"
    if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return None
    return f"this CPU ({torch.backends.cpu.get_cpu_capability()}) has no bf16 instructions"


def warm_up_decoding(backend: Backend, batch_sizes: list[int]) -> None:
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
        out, errors = backend.infer_encoded([jpeg] * n, n)
        if errors or out.shape[0] != n:
            raise RuntimeError(f"{backend.name}: GPU decode warm-up failed at batch {n}: {errors}")


class TorchBackend(Backend):
    gpu_decode = True
    supported_precisions = ("fp32", "bf16", "fp16")
    thread_option = ("torch", "threads")
    _runner: TorchRunner | None = None  # set by load(), cleared by close()

    @classmethod
    def unavailable(cls, precision: str, device: str) -> str | None:
        if precision == "bf16":
            return bf16_support(device)
        if precision == "fp16" and not device.startswith("cuda"):
            return NO_GPU_FP16
        return None

    def active_providers(self) -> list[str]:
        return [f"torch-{self.config.device.split(':')[0]}"]

    @abc.abstractmethod
    def build_module(self) -> Any:
        """The uint8-in, logits-out torch module on the configured device and precision."""

    def load(self) -> None:
        from app.backends.torch.models import TorchRunner, require_cuda, set_threads

        cfg = self.config
        require_cuda(cfg.device, " (input.decode 'gpu')" if cfg.input.decode == "gpu" else "")
        set_threads(cfg.torch.threads)
        self._runner = TorchRunner(
            self.build_module(),
            cfg.device,
            cfg.batching.max_batch_size,
            self.input_shape(),
            cfg.input,
        )

    def warmup(self, batch_sizes: list[int]) -> None:
        super().warmup(batch_sizes)
        if self.config.input.decode == "gpu":
            warm_up_decoding(self, batch_sizes)

    @property
    def runner(self) -> TorchRunner:
        if self._runner is None:
            raise RuntimeError(f"{self.name} backend of {self.config.name!r} is not loaded")
        return self._runner

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.runner(batch)

    def infer_encoded(
        self, images: list[EncodedImage], pad_to: int
    ) -> tuple[np.ndarray, dict[int, Exception]]:
        return self.runner.run_encoded(images, pad_to)

    def take_decode_fallbacks(self) -> dict[str, int]:
        runner = self._runner
        return runner.fallbacks.take() if runner is not None else {}

    def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.close()
