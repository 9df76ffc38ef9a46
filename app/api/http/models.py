"""GET /v1/models and /v1/models/{name}: what each model runs on, and whether it is ready."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter

from app.api.http.deps import RepositoryDep
from app.repository import ModelState, ServedModel

router = APIRouter(tags=["models"])


@router.get("/v1/models")
async def list_models(repository: RepositoryDep) -> dict[str, Any]:
    return {"models": [describe(m) for m in repository.all_served()]}  # every version


@router.get("/v1/models/{name}", responses={404: {}})
async def get_model(name: str, repository: RepositoryDep) -> dict[str, Any]:
    return describe(repository.get(name))


def describe(model: ServedModel) -> dict[str, Any]:
    """One served model (version) as /v1/models shows it."""
    cfg = model.config
    info = model.info
    unhealthy = model.state == ModelState.READY and not model.ready
    return {
        "name": cfg.name,
        "version": cfg.version,
        "state": "unhealthy" if unhealthy else model.state.value,
        "ready": model.ready,
        "reason": model.reason,
        "arch": cfg.arch,
        "backend": cfg.backend,
        "device": info.device if info else cfg.device,
        "instance_devices": [b.active_device() for b in model.backends],
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
            "warmed_batch_sizes": cfg.batching.bucket_sizes(),
            "queue_depth": model.batcher.queue_depth if model.batcher else 0,
        },
        # what the scheduler decided (app/scheduling.py): adaptive or static and why, cores,
        # batch caps, per-batch times, each runner's level
        "scheduler": model.batcher.describe() if model.batcher else None,
        "details": info.details if info else {},
        "threads": model.budget.as_dict() if model.budget else None,
        "export_check": cfg.export_check,
        "load_seconds": model.load_seconds,
        "folder": model.folder,
        "worker_pid": os.getpid(),  # which server process answered (several with workers > 1)
    }
