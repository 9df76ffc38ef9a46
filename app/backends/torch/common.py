"""What the two torch backends share: a TorchRunner on the model's device (its own CUDA stream,
pinned staging buffer, GPU JPEG decoding when configured). Each backend only says how to
build its module."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

import numpy as np

from app.backends.base import Backend

if TYPE_CHECKING:
    from app.preprocess import EncodedImage


class TorchBackend(Backend):
    gpu_decode = True

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
            self._input_shape(),
            cfg.input,
        )

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self._runner(batch)

    def infer_encoded(
        self, images: list[EncodedImage], pad_to: int
    ) -> tuple[np.ndarray, dict[int, Exception]]:
        return self._runner.run_encoded(images, pad_to)

    def close(self) -> None:
        runner, self._runner = getattr(self, "_runner", None), None
        if runner is not None:
            runner.close()
