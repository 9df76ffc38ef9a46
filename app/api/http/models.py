"""GET /v1/models and /v1/models/{name}: what each model runs on, and whether it is ready."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.api.http.deps import RepositoryDep

router = APIRouter(tags=["models"])


@router.get("/v1/models")
async def list_models(repository: RepositoryDep) -> dict[str, Any]:
    return {"models": [m.describe() for m in repository.all_served()]}  # every version


@router.get("/v1/models/{name}", responses={404: {}})
async def get_model(name: str, repository: RepositoryDep) -> dict[str, Any]:
    return repository.get(name).describe()
