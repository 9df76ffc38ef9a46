"""TorchScript backend: a traced and frozen uint8-in module. Its precision is fixed at export:
the file is config.files['torchscript'] (fp32) or ['torchscript-<precision>']."""

from __future__ import annotations

from typing import Any

from app.backends.torch.common import TorchBackend


class TorchScriptBackend(TorchBackend):
    name = "torchscript"

    def build_module(self) -> Any:
        import torch

        from app.backends.torch.models import quiet_torch

        cfg = self.config
        key = "torchscript" if cfg.precision == "fp32" else f"torchscript-{cfg.precision}"
        with quiet_torch():
            return torch.jit.load(str(cfg.path_of(key)), map_location=cfg.device).eval()
