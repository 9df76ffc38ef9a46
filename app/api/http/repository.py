"""Triton's model repository extension over HTTP: index, load, unload.

A thin adapter over ModelRepository.index() / load() / unload(), which check the model control
mode and the name (a folder of the repository, never a path); the bearer token applies as to
every non-health route. tritonclient.http's get_model_repository_index(), load_model() and
unload_model() speak this.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.api.http.body import read_body
from app.api.http.deps import RepositoryDep, SettingsDep
from app.api.inputs import parse_json
from app.config import Settings
from app.errors import InvalidInput

router = APIRouter(prefix="/v2/repository", tags=["repository"])
MAX_BODY = 64 * 1024  # these bodies hold a few flags at most
# Triton's load may carry a config or model files to write; this server never writes into the
# repository for a client, so such a load is refused instead of silently ignored.
REFUSED_PARAMETERS = ("config",)


def refuse_load_parameters(names: Iterable[str]) -> None:
    """A load that asks the server to write a config or files is refused (HTTP and gRPC)."""
    refused = [k for k in names if k in REFUSED_PARAMETERS or k.startswith("file:")]
    if refused:
        raise InvalidInput(
            f"load parameters {refused} are not supported: the server loads only what is in "
            "its model repository; write the files there, then load"
        )


async def _options(request: Request, settings: Settings) -> dict[str, Any]:
    body = await read_body(request, MAX_BODY)
    if not body.strip():
        return {}
    value = parse_json(body, settings.max_json_depth)  # 400 when not JSON or too deep
    if not isinstance(value, dict):
        raise InvalidInput("the body must be a JSON object (or empty)")
    return value


@router.post("/index", responses={400: {}, 401: {}})
async def index(request: Request, repository: RepositoryDep, settings: SettingsDep) -> JSONResponse:
    """Every model folder with its served versions, state and reason. Body (optional):
    {"ready": true} lists only the models ready to serve."""
    options = await _options(request, settings)
    ready = options.get("ready", False)
    if not isinstance(ready, bool):
        raise InvalidInput('"ready" must be true or false')
    return JSONResponse(repository.index(ready_only=ready))


@router.post("/models/{name}/load", responses={400: {}, 401: {}, 403: {}, 404: {}, 503: {}})
async def load(
    name: str, request: Request, repository: RepositoryDep, settings: SettingsDep
) -> Response:
    """Load a model folder, or reload it without downtime if its files changed."""
    parameters = (await _options(request, settings)).get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput('"parameters" must be a JSON object')
    refuse_load_parameters(parameters)
    await repository.load(name)
    return Response(status_code=200)


@router.post("/models/{name}/unload", responses={400: {}, 401: {}, 403: {}, 404: {}})
async def unload(
    name: str, request: Request, repository: RepositoryDep, settings: SettingsDep
) -> Response:
    """Stop accepting requests for the folder's models, finish those accepted, release them;
    their names then answer 404."""
    await _options(request, settings)
    await repository.unload(name)
    return Response(status_code=200)
