"""TorchScript backend: a traced and frozen uint8-in module. Its precision is fixed at export:
the file is config.files['torchscript'] (fp32) or ['torchscript-<precision>']."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from app.backends.base import Backend

if TYPE_CHECKING:
    from app.preprocess import EncodedImage


class TorchScriptBackend(Backend):
    gpu_decode = True
    name = "torchscript"

    def load(self) -> None:
        import torch

        from app.torch_models import TorchRunner, quiet_torch, require_cuda, set_threads

        cfg = self.config
        require_cuda(cfg.device, " (input.decode 'gpu')" if cfg.input.decode == "gpu" else "")
        set_threads(cfg.torch.threads)
        key = "torchscript" if cfg.precision == "fp32" else f"torchscript-{cfg.precision}"
        with quiet_torch():
            module = torch.jit.load(str(cfg.path_of(key)), map_location=cfg.device).eval()
        self._runner = TorchRunner(
            module, cfg.device, cfg.batching.max_batch_size, self._input_shape(), cfg.input
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
