"""Triton's model repository extension over HTTP: index, load, unload.

A thin adapter over the V2 handler's index() / load() / unload() (app.api.v2.handler, shared
with gRPC) and so over ModelRepository's, which check the model control mode and the name (a
folder of the repository, never a path); the bearer token applies as to every non-health route.
tritonclient.http's get_model_repository_index(), load_model() and unload_model() speak this.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.api.http.body import read_body
from app.api.http.deps import SettingsDep, V2Dep
from app.api.inputs import parse_json
from app.config import Settings
from app.errors import InvalidInput
from app.repository import IndexEntry

router = APIRouter(prefix="/v2/repository", tags=["repository"])
MAX_BODY = 64 * 1024  # these bodies hold a few flags at most


async def _options(request: Request, settings: Settings) -> dict[str, Any]:
    body = await read_body(request, MAX_BODY)
    if not body.strip():
        return {}
    value = parse_json(body, settings.max_json_depth)  # 400 when not JSON or too deep
    if not isinstance(value, dict):
        raise InvalidInput("the body must be a JSON object (or empty)")
    return value


@router.post("/index", responses={400: {}, 401: {}})
async def index(request: Request, v2: V2Dep, settings: SettingsDep) -> JSONResponse:
    """Every model folder with its served versions, state and reason. Body (optional):
    {"ready": true} lists only the models ready to serve."""
    options = await _options(request, settings)
    ready = options.get("ready", False)
    if not isinstance(ready, bool):
        raise InvalidInput('"ready" must be true or false')
    return JSONResponse([index_entry(e) for e in v2.index(ready_only=ready)])


@router.post("/models/{name}/load", responses={400: {}, 401: {}, 403: {}, 404: {}, 503: {}})
async def load(name: str, request: Request, v2: V2Dep, settings: SettingsDep) -> Response:
    """Load a model folder, or reload it without downtime if its files changed."""
    parameters = (await _options(request, settings)).get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput('"parameters" must be a JSON object')
    await v2.load(name, parameters)
    return Response(status_code=200)


@router.post("/models/{name}/unload", responses={400: {}, 401: {}, 403: {}, 404: {}})
async def unload(name: str, request: Request, v2: V2Dep, settings: SettingsDep) -> Response:
    """Stop accepting requests for the folder's models, finish those accepted, release them;
    their names then answer 404."""
    await _options(request, settings)
    await v2.unload(name)
    return Response(status_code=200)


def index_entry(entry: IndexEntry) -> dict[str, str]:
    """One index line as Triton's HTTP API writes it (no version for a folder serving none)."""
    line = {"name": entry.name}
    if entry.version is not None:
        line["version"] = entry.version
    return {**line, "state": entry.state.value, "reason": entry.reason}
