"""A throwaway backend, this one file and nothing else: what adding a backend takes.

It runs an ONNX file with onnxruntime's plain session (no providers, no IO binding) under a
name, platform and file keys of its own, so every caller that serves or checks it (the
batcher, /v1, V2 metadata and config, `resnet-serve check`) must learn them from the class:
none keeps a table. Registered as a plugin: RESNET_SERVE_BACKEND_PLUGINS=PLUGIN.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.backends.base import Backend

PLUGIN = "throwaway=tests.backends.plugin_backend:ThrowawayBackend"


class ThrowawayBackend(Backend):
    name = "throwaway"
    platform = "throwaway_onnx"
    supported_precisions = ("fp32", "int8")  # file keys (the default): throwaway, throwaway-int8

    @classmethod
    def unavailable(cls, precision: str, device: str) -> str | None:
        return None if device == "cpu" else "the throwaway backend runs on the CPU only"

    def load(self) -> None:
        import onnxruntime as ort

        path = self.config.path_of(self.file_key(self.config.precision))
        self._session: Any = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def infer(self, batch: np.ndarray) -> np.ndarray:
        out: np.ndarray = self._session.run(None, {"images": batch})[0]
        return out

    def active_providers(self) -> list[str]:
        return ["throwaway-cpu"]

    def close(self) -> None:
        self._session = None
