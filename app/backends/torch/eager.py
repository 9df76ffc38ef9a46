"""Eager PyTorch backend: torchvision architecture + state_dict, fp32/bf16 on CPU, fp16 on CUDA,
optionally torch.compile'd."""

from __future__ import annotations

from typing import Any

from app.backends.torch.common import TorchBackend


class EagerBackend(TorchBackend):
    name = "eager"
    platform = "pytorch"

    @classmethod
    def file_key(cls, precision: str) -> str:
        return "eager"  # one fp32 state_dict: the other precisions are converted at load

    def build_module(self) -> Any:
        import torch

        from app.backends.torch.models import build_arch, wrap

        cfg = self.config
        model = build_arch(cfg.arch, cfg.num_classes)
        model.load_state_dict(
            torch.load(
                cfg.path_of(self.file_key(cfg.precision)), map_location="cpu", weights_only=True
            )
        )
        module: Any = wrap(
            model, cfg.input.mean, cfg.input.std, cfg.device, cfg.precision, cfg.torch.channels_last
        )
        if cfg.torch.compile:
            module = torch.compile(module, mode=cfg.torch.compile_mode, dynamic=False)
        return module

    def details(self) -> dict[str, Any]:
        return {
            "compiled": self.config.torch.compile,
            "channels_last": self.config.torch.channels_last,
        }
