"""Liveness (the process answers) and readiness (every model loaded, warmed, accepting)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.http.deps import RepositoryDep

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/health/ready", responses={503: {}})
async def ready(repository: RepositoryDep) -> JSONResponse:
    draining = repository.draining
    models = {
        m.name: ({"state": m.state, "reason": m.reason} if m.reason else {"state": m.state})
        for m in repository.models.values()
    }
    if repository.ready:
        return JSONResponse({"status": "ready", "models": models})
    status = "draining" if draining else "not ready"
    return JSONResponse({"status": status, "models": models}, status_code=503)
