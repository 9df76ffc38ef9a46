"""One served model (name, version) and its state: what it serves now, whether it is ready, and
how it describes itself.

A model is ready when it is loaded, its batcher accepts work and has a healthy instance, and
the server is not draining (`draining`, set by ModelRepository.begin_drain(), is never
cleared). The object a request holds stays the same across a reload: only its instances change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from app.backends import Backend, BackendInfo
from app.batching import DynamicBatcher, bucket_sizes
from app.config import ModelConfig
from app.errors import ModelNotReady
from app.metrics import ModelTelemetry
from app.repository.instances import Instances
from app.threads import ThreadBudget

LOADING, READY, FAILED, STOPPING, STOPPED = "loading", "ready", "failed", "stopping", "stopped"
UNLOADING = "unloading"


@dataclass
class ServedModel:
    """One served (name, version). The object a request holds stays the same across a reload:
    only its instances change (see the module's docstring)."""

    config: ModelConfig
    telemetry: ModelTelemetry
    state: str = LOADING
    reason: str | None = None
    backends: list[Backend] = field(default_factory=list)
    batcher: DynamicBatcher | None = None
    info: BackendInfo | None = None
    load_seconds: float | None = None
    draining: bool = False  # set by ModelRepository.begin_drain(), never cleared
    folder: str | None = None  # the repository folder it came from (None: configs given)
    replaced_by: ServedModel | None = None  # a version no longer served: its successor
    budget: ThreadBudget | None = None  # the thread budget in force (app/threads.py)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def serving(self) -> bool:
        """Takes requests now (also in the grace period of a drain, when it is not ready)."""
        return (
            self.state == READY
            and self.batcher is not None
            and self.batcher.accepting
            and self.batcher.healthy
        )

    @property
    def ready(self) -> bool:
        """What health checks, /v1/models, V2 and the model_ready gauge report."""
        return self.serving and not self.draining

    def successor(self) -> ServedModel:
        """The model that runs this one's requests now: itself, or the version that replaced it."""
        return self.replaced_by.successor() if self.replaced_by is not None else self

    def require_ready(self) -> DynamicBatcher:
        """The batcher to queue a request on now (call submit() before any await)."""
        if self.replaced_by is not None:
            return self.replaced_by.require_ready()
        if not self.serving or self.batcher is None:
            why = f": {self.reason}" if self.reason else ""
            if self.state == READY and self.batcher is not None and not self.batcher.healthy:
                why = ": every instance is busy with a batch that outlived infer_timeout_s"
            raise ModelNotReady(f"model {self.name!r} is {self.state}{why}")
        return self.batcher

    def attach(self, built: Instances) -> Instances | None:
        """Serve `built` from now on; returns the instances it served until now."""
        old = self.detach()
        self.config, self.backends, self.batcher = built.config, built.backends, built.batcher
        self.info, self.load_seconds = built.info, built.load_seconds
        self.budget = built.budget
        self.state, self.reason = READY, None
        return old

    def detach(self) -> Instances | None:
        old = None
        if self.batcher is not None and self.info is not None:
            old = Instances(
                self.config,
                self.backends,
                self.batcher,
                self.info,
                self.load_seconds or 0.0,
                self.budget,
            )
        self.backends, self.batcher = [], None
        return old

    def describe(self) -> dict[str, Any]:
        cfg = self.config
        info = self.info
        return {
            "name": cfg.name,
            "version": cfg.version,
            "state": self.state if self.ready or self.state != READY else "unhealthy",
            "ready": self.ready,
            "reason": self.reason,
            "arch": cfg.arch,
            "backend": cfg.backend,
            "device": info.device if info else cfg.device,
            "instance_devices": [b.active_device() for b in self.backends],
            "precision": cfg.precision,
            "providers": info.providers if info else [],
            "weights": cfg.weights,
            "weights_fallback": cfg.weights_fallback,
            "num_classes": cfg.num_classes,
            "input": {
                "shape": list(info.input_shape) if info else [cfg.input.crop, cfg.input.crop, 3],
                "dtype": "uint8",
                "layout": "NHWC",
                "resize": cfg.input.resize,
                "crop": cfg.input.crop,
                "mean": list(cfg.input.mean),
                "std": list(cfg.input.std),
                "decode": cfg.input.decode,
            },
            "batching": {
                **cfg.batching.model_dump(),
                "pad_to_bucket": cfg.pads_to_bucket,
                "warmed_batch_sizes": bucket_sizes(cfg.batching.max_batch_size),
                "queue_depth": self.batcher.queue_depth if self.batcher else 0,
            },
            "scheduler": self.batcher.describe() if self.batcher else None,
            "details": info.details if info else {},
            "threads": self.budget.as_dict() if self.budget else None,
            "export_check": cfg.export_check,
            "load_seconds": self.load_seconds,
            "folder": self.folder,
            "worker_pid": os.getpid(),  # which server process answered (several with workers > 1)
        }
