"""Triton's trace extension over HTTP: `GET/POST /v2/trace/setting` and
`/v2/models/{name}/trace/setting`, as tritonclient's get_trace_settings() and
update_trace_settings() call them. They read and change the sampler of the OpenTelemetry
traces (app/observability/trace_settings.py): trace_level, trace_rate, trace_count."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from app.api.http.body import read_body
from app.api.http.deps import RepositoryDep, SettingsDep
from app.api.inputs import parse_json
from app.config import Settings
from app.observability.observer import Observer
from app.observability.trace_settings import TraceSettings, check_changeable

router = APIRouter(prefix="/v2", tags=["trace"])
ERRORS: dict[int | str, dict[str, Any]] = {400: {}, 403: {}, 404: {}}


async def get_trace_settings(request: Request) -> TraceSettings:
    observer: Observer = request.app.state.observer  # set by create_app
    return observer.trace_settings


TraceSettingsDep = Annotated[TraceSettings, Depends(get_trace_settings)]


async def _changes(request: Request, settings: Settings) -> Any:
    body = await read_body(request, settings.max_body_bytes)
    return parse_json(body, settings.max_json_depth, "trace settings") if body.strip() else {}


@router.get("/trace/setting", responses=ERRORS)
async def get_settings(traces: TraceSettingsDep) -> dict[str, Any]:
    return traces.get()


@router.post("/trace/setting", responses=ERRORS)
async def update_settings(
    request: Request, traces: TraceSettingsDep, settings: SettingsDep
) -> dict[str, Any]:
    check_changeable(settings.workers)
    return traces.update(None, await _changes(request, settings))


@router.get("/models/{name}/trace/setting", responses=ERRORS)
async def get_model_settings(
    name: str, traces: TraceSettingsDep, repository: RepositoryDep
) -> dict[str, Any]:
    repository.get(name)  # 404 for a model not served
    return traces.get(name)


@router.post("/models/{name}/trace/setting", responses=ERRORS)
async def update_model_settings(
    name: str,
    request: Request,
    traces: TraceSettingsDep,
    repository: RepositoryDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    repository.get(name)
    check_changeable(settings.workers)
    changes = await _changes(request, settings)
    if changes == {}:  # Triton: a model's POST without settings removes the model's own
        return traces.clear(name)
    return traces.update(name, changes)
