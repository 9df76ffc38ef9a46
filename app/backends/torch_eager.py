"""Eager PyTorch backend: torchvision architecture + state_dict, fp32/bf16 on CPU, fp16 on CUDA,
optionally torch.compile'd."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from app.backends.base import Backend

if TYPE_CHECKING:
    from app.preprocess import EncodedImage


class EagerBackend(Backend):
    gpu_decode = True
    name = "eager"

    def load(self) -> None:
        import torch

        from app.torch_models import TorchRunner, build_arch, require_cuda, set_threads, wrap

        cfg = self.config
        require_cuda(cfg.device, " (input.decode 'gpu')" if cfg.input.decode == "gpu" else "")
        set_threads(cfg.torch.threads)
        model = build_arch(cfg.arch, cfg.num_classes)
        state = torch.load(cfg.path_of("eager"), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        module = wrap(
            model, cfg.input.mean, cfg.input.std, cfg.device, cfg.precision, cfg.torch.channels_last
        )
        if cfg.torch.compile:
            module = torch.compile(module, mode=cfg.torch.compile_mode, dynamic=False)
        self._runner = TorchRunner(
            module, cfg.device, cfg.batching.max_batch_size, self._input_shape(), cfg.input
        )

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self._runner(batch)

    def infer_encoded(
        self, images: list[EncodedImage], pad_to: int
    ) -> tuple[np.ndarray, dict[int, Exception]]:
        return self._runner.run_encoded(images, pad_to)

    def details(self) -> dict[str, Any]:
        return {"compiled": self.config.torch.compile, "channels_last": self.config.torch.channels_last}

    def close(self) -> None:
        runner, self._runner = getattr(self, "_runner", None), None
        if runner is not None:
            runner.close()
