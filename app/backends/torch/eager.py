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

        from app.backends.torch.models import build_arch, compile_module, wrap

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
            # one graph per batch size the batcher can form: the padded buckets, else any size
            sizes = cfg.batching.max_batch_size
            graphs = (sizes - 1).bit_length() + 1 if cfg.pads_to_bucket else sizes
            module = compile_module(module, cfg.torch.compile_mode, graphs)
        return module

    def details(self) -> dict[str, Any]:
        return {
            "compiled": self.config.torch.compile,
            "channels_last": self.config.torch.channels_last,
        }
