"""KServe V2 / Open Inference Protocol over HTTP, with Triton's binary tensor data,
classification, statistics and model configuration extensions.

A thin adapter over app.api.v2.handler (the protocol's operations, shared with gRPC): the routes
and their OpenAPI description, and the HTTP framing of an inference request (HttpTransport).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from app.api.http.body import read_body, wait_for_disconnect
from app.api.http.deps import SettingsDep, V2Dep
from app.api.inputs import parse_json
from app.api.v2 import codec
from app.api.v2.handler import Transport, V2Handler
from app.config import Settings
from app.repository import ServedModel
from app.service import Disconnected

router = APIRouter(prefix="/v2", tags=["v2"])
ENDPOINT = "v2_infer"
ERRORS: dict[int | str, dict[str, Any]] = {400: {}, 404: {}, 413: {}, 503: {}, 504: {}}


async def path_version(request: Request) -> str | None:
    """The {version} of the /versions/{version} routes; None on the unversioned ones (a
    dependency, so the unversioned routes get no `version` query parameter)."""
    return request.path_params.get("version")


VersionDep = Annotated[str | None, Depends(path_version)]
# The versioned routes declare {version} in the OpenAPI document themselves (the dependency
# above reads it, so FastAPI does not see it as a parameter).
VERSIONED: dict[str, Any] = {
    "parameters": [
        {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
}


# ------------------------------------------------------------------------------ server
@router.get("")
async def server_metadata() -> dict[str, Any]:
    return V2Handler.server_metadata()


@router.get("/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", responses={503: {}})
async def ready(v2: V2Dep) -> JSONResponse:
    ok = v2.ready
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


# ------------------------------------------------------------------------------ statistics
@router.get("/models/stats")
async def all_statistics(v2: V2Dep) -> dict[str, Any]:
    return {"model_stats": v2.statistics()}


@router.get("/models/{name}/stats", responses={404: {}})
@router.get(
    "/models/{name}/versions/{version}/stats",
    openapi_extra=VERSIONED,
    responses={404: {}},
)
async def statistics(name: str, v2: V2Dep, version: VersionDep) -> dict[str, Any]:
    return {"model_stats": v2.statistics(name, version)}


# ------------------------------------------------------------------------------ models
@router.get("/models/{name}", responses={404: {}})
@router.get(
    "/models/{name}/versions/{version}",
    openapi_extra=VERSIONED,
    responses={404: {}},
)
async def model_metadata(name: str, v2: V2Dep, version: VersionDep) -> dict[str, Any]:
    return v2.model_metadata(name, version)


@router.get("/models/{name}/ready", responses={404: {}, 503: {}})
@router.get(
    "/models/{name}/versions/{version}/ready",
    openapi_extra=VERSIONED,
    responses={404: {}, 503: {}},
)
async def model_ready(name: str, v2: V2Dep, version: VersionDep) -> dict[str, Any]:
    model = v2.model(name, version)
    model.require_ready()  # 503 with the reason
    return {"name": model.name, "ready": True}


@router.get("/models/{name}/config", responses={404: {}})
@router.get(
    "/models/{name}/versions/{version}/config",
    openapi_extra=VERSIONED,
    responses={404: {}},
)
async def model_config(name: str, v2: V2Dep, version: VersionDep) -> dict[str, Any]:
    return v2.model_config(name, version)


# ------------------------------------------------------------------------------ inference
_INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object", "required": ["inputs"]}},
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": f"JSON header, then binary tensor data; send {codec.HEADER_LENGTH}.",
            },
        },
    }
}


@router.post("/models/{name}/infer", openapi_extra=_INFER_BODY, responses=ERRORS)
@router.post(
    "/models/{name}/versions/{version}/infer",
    openapi_extra={**_INFER_BODY, **VERSIONED},
    responses=ERRORS,
)
async def infer(
    name: str, request: Request, v2: V2Dep, settings: SettingsDep, version: VersionDep
) -> Response:
    return await v2.infer(name, version, HttpTransport(request, settings))


class HttpTransport(Transport[Response]):
    """V2 over HTTP: a JSON header, optionally followed by binary tensor data (compressed or
    not); the answer in the same framing."""

    endpoint = ENDPOINT

    def __init__(self, request: Request, settings: Settings) -> None:
        self.request, self.settings = request, settings

    async def read(self) -> codec.InferRequest:
        request, settings = self.request, self.settings
        body = codec.decompress(
            await read_body(request, settings.max_body_bytes),
            request.headers.get("content-encoding"),
            settings.max_body_bytes,
        )
        header, binary = codec.split_body(body, request.headers.get(codec.HEADER_LENGTH))
        return codec.parse_request(
            parse_json(header, settings.max_json_depth, "request header"), binary
        )

    def disconnected(self) -> Disconnected:
        return lambda: wait_for_disconnect(self.request)

    def encode(
        self, model: ServedModel, req: codec.InferRequest, outputs: list[codec.OutputTensor]
    ) -> Response:
        content, header_length = codec.encode_response(
            model.name, model.config.version, req.id, outputs
        )
        if header_length is None:
            return Response(content, media_type="application/json")
        return Response(
            content,
            media_type="application/octet-stream",
            headers={codec.HEADER_LENGTH: str(header_length)},
        )
