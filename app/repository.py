"""The served models: load, warm up and start each one, report its state, close them all.

A model that fails to load is kept, marked failed with its reason, and the server stays up
(not ready) instead of crash-looping without an explanation.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from app.backends import Backend, BackendInfo, create_backend
from app.batching import DynamicBatcher, bucket_sizes
from app.config import ModelConfig
from app.errors import ModelNotFound, ModelNotReady
from app.metrics import Metrics, ModelTelemetry
from app.placement import instance_configs
from app.threads import ThreadBudget, resolve

log = logging.getLogger(__name__)

LOADING, READY, FAILED, STOPPING, STOPPED = "loading", "ready", "failed", "stopping", "stopped"


@dataclass
class ServedModel:
    config: ModelConfig
    telemetry: ModelTelemetry
    state: str = LOADING
    reason: str | None = None
    backends: list[Backend] = field(default_factory=list)
    batcher: DynamicBatcher | None = None
    info: BackendInfo | None = None
    load_seconds: float | None = None
    budget: ThreadBudget | None = None  # the thread budget in force (app/threads.py)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def ready(self) -> bool:
        return (
            self.state == READY
            and self.batcher is not None
            and self.batcher.accepting
            and self.batcher.healthy
        )

    def require_ready(self) -> DynamicBatcher:
        if not self.ready or self.batcher is None:
            why = f": {self.reason}" if self.reason else ""
            if self.state == READY and self.batcher is not None and not self.batcher.healthy:
                why = ": every instance is busy with a batch that outlived infer_timeout_s"
            raise ModelNotReady(f"model {self.name!r} is {self.state}{why}")
        return self.batcher

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
            "details": info.details if info else {},
            "threads": self.budget.as_dict() if self.budget else None,
            "export_check": cfg.export_check,
            "load_seconds": self.load_seconds,
            "worker_pid": os.getpid(),  # which server process answered (several with workers > 1)
        }


def _load_instances(config: ModelConfig) -> tuple[list[Backend], BackendInfo]:
    """Blocking: create, load and warm up every instance of one model."""
    backends: list[Backend] = []
    try:
        for instance in instance_configs(config):
            backend = create_backend(instance)
            backends.append(backend)
            backend.load()
            backend.warmup(bucket_sizes(config.batching.max_batch_size))
    except BaseException:
        for b in backends:
            _close_quietly(b)
        raise
    return backends, backends[0].info()


def _close_quietly(backend: Backend) -> None:
    try:
        backend.close()
    except Exception as exc:
        log.warning("closing %s failed: %s", backend.name, exc)


class ModelRepository:
    def __init__(
        self,
        configs: list[ModelConfig],
        metrics: Metrics,
        retry_after_s: float = 1.0,
        budgets: dict[str, ThreadBudget] | None = None,
    ):
        self.metrics = metrics
        self.retry_after_s = retry_after_s
        if budgets is None:  # not resolved by create_app (a test, a tool): resolve here
            configs, budgets, _ = resolve(configs, decode_threads=0, workers=1)
        self.models: dict[str, ServedModel] = {
            c.name: ServedModel(c, metrics.for_model(c.name), budget=budgets.get(c.name))
            for c in configs
        }

    def get(self, name: str) -> ServedModel:
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFound(f"no model named {name!r} (served: {known})") from None

    @property
    def ready(self) -> bool:
        return bool(self.models) and all(m.ready for m in self.models.values())

    async def load_all(self) -> None:
        for model in self.models.values():
            await self.load(model)

    async def load(self, model: ServedModel) -> None:
        cfg = model.config
        if cfg.weights_fallback:
            log.warning(
                "model %s serves RANDOM weights (ImageNet weights could not be downloaded at "
                "export): its predictions are meaningless",
                cfg.name,
            )
        started = time.perf_counter()
        try:
            backends, info = await asyncio.to_thread(_load_instances, cfg)
        except Exception as exc:
            model.state, model.reason = FAILED, f"load failed: {type(exc).__name__}: {exc}"
            log.error("model %s: %s", cfg.name, model.reason)
            return
        model.backends, model.info = backends, info
        model.load_seconds = round(time.perf_counter() - started, 3)
        model.batcher = DynamicBatcher(
            cfg.name,
            backends,
            cfg.batching,
            model.telemetry,
            pad_to_bucket=cfg.pads_to_bucket,
            retry_after_s=self.retry_after_s,
        )
        model.batcher.start()
        model.state = READY
        model.telemetry.ready.set(1)
        model.telemetry.set_info(cfg.backend, info.device, info.precision)
        log.info(
            "model %s ready in %.1f s: backend %s on %s (%s), providers %s, %d instance(s)",
            cfg.name,
            model.load_seconds,
            cfg.backend,
            info.device,
            cfg.precision,
            info.providers,
            len(backends),
        )

    def stop_accepting(self) -> None:
        for model in self.models.values():
            model.telemetry.ready.set(0)
            if model.batcher is not None:
                model.batcher.stop_accepting()
                if model.state == READY:
                    model.state = STOPPING

    async def close(self) -> None:
        """Finish every accepted request, then release every model."""
        self.stop_accepting()
        for model in self.models.values():
            if model.batcher is not None:
                await model.batcher.close()
            for backend in model.backends:
                _close_quietly(backend)
            model.backends.clear()
            if model.state != FAILED:
                model.state = STOPPED
