"""TorchScript backend: a traced and frozen uint8-in module. Its precision is fixed at export:
the file is config.files['torchscript'] (fp32) or ['torchscript-<precision>']."""

from __future__ import annotations

from typing import Any

from app.backends.torch.common import TorchBackend


class TorchScriptBackend(TorchBackend):
    name = "torchscript"
    platform = "pytorch_libtorch"  # file keys: torchscript, torchscript-bf16, torchscript-fp16

    def build_module(self) -> Any:
        import torch

        from app.backends.torch.models import quiet_torch

        cfg = self.config
        path = cfg.path_of(self.file_key(cfg.precision))
        with quiet_torch():
            return torch.jit.load(str(path), map_location=cfg.device).eval()
