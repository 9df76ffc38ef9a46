"""KServe V2 / Open Inference Protocol over HTTP, with Triton's binary tensor data,
classification, statistics and model configuration extensions.

A thin adapter: tensors are decoded by v2_codec, images go through the same DataPlane (decode
pool, batcher, deadline, client disconnect) as /v1 classify; no second inference path.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from app import __version__
from app.api.http.body import read_body
from app.api.http.classify import wait_for_disconnect
from app.api.http.deps import DataPlaneDep, RepositoryDep, SettingsDep
from app.api.inputs import b64decode, parse_json
from app.api.recording import recorded
from app.api.v2 import codec, schema
from app.errors import InvalidInput
from app.observability.request import request_id
from app.postprocess import softmax
from app.preprocess import Batch
from app.repository import ModelRepository, ServedModel
from app.service import DataPlane

router = APIRouter(prefix="/v2", tags=["v2"])
ENDPOINT = "v2_infer"
ERRORS: dict[int | str, dict[str, Any]] = {400: {}, 404: {}, 413: {}, 503: {}, 504: {}}


def path_version(request: Request) -> str | None:
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


def resolve(repository: ModelRepository, name: str, version: str | None) -> ServedModel:
    """The served model, or one served version of it (404 when not served)."""
    return repository.get(name, version)


# ------------------------------------------------------------------------------ server
@router.get("")
async def server_metadata() -> dict[str, Any]:
    return {"name": "resnet-serve", "version": __version__, "extensions": schema.EXTENSIONS}


@router.get("/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", responses={503: {}})
async def ready(repository: RepositoryDep) -> JSONResponse:
    ok = repository.ready  # false while draining: the repository owns readiness
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


# ------------------------------------------------------------------------------ statistics
@router.get("/models/stats")
async def all_statistics(repository: RepositoryDep) -> dict[str, Any]:
    return {"model_stats": [schema.model_statistics(m) for m in repository.all_served()]}


@router.get("/models/{name}/stats", responses={404: {}})
@router.get(
    "/models/{name}/versions/{version}/stats",
    openapi_extra=VERSIONED,
    responses={404: {}},
)
async def statistics(name: str, repository: RepositoryDep, version: VersionDep) -> dict[str, Any]:
    return {"model_stats": [schema.model_statistics(resolve(repository, name, version))]}


# ------------------------------------------------------------------------------ models
@router.get("/models/{name}", responses={404: {}})
@router.get(
    "/models/{name}/versions/{version}",
    openapi_extra=VERSIONED,
    responses={404: {}},
)
async def model_metadata(
    name: str, repository: RepositoryDep, version: VersionDep
) -> dict[str, Any]:
    metadata = schema.model_metadata(resolve(repository, name, version))
    metadata["versions"] = repository.served_versions(name)  # every version served
    return metadata


@router.get("/models/{name}/ready", responses={404: {}, 503: {}})
@router.get(
    "/models/{name}/versions/{version}/ready",
    openapi_extra=VERSIONED,
    responses={404: {}, 503: {}},
)
async def model_ready(name: str, repository: RepositoryDep, version: VersionDep) -> dict[str, Any]:
    model = resolve(repository, name, version)
    model.require_ready()  # 503 with the reason
    return {"name": model.name, "ready": True}


@router.get("/models/{name}/config", responses={404: {}})
@router.get(
    "/models/{name}/versions/{version}/config",
    openapi_extra=VERSIONED,
    responses={404: {}},
)
async def model_config(
    name: str, repository: RepositoryDep, settings: SettingsDep, version: VersionDep
) -> dict[str, Any]:
    return schema.model_config(
        resolve(repository, name, version),
        settings.request_timeout_ms,
        repository.served_versions(name),
    )


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
    name: str,
    request: Request,
    dataplane: DataPlaneDep,
    settings: SettingsDep,
    version: VersionDep,
) -> Response:
    model = resolve(dataplane.repository, name, version)  # 404 before reading the body
    with recorded(model.telemetry, ENDPOINT):
        body = codec.decompress(
            await read_body(request, settings.max_body_bytes),
            request.headers.get("content-encoding"),
            settings.max_body_bytes,
        )
        header, binary = codec.split_body(body, request.headers.get(codec.HEADER_LENGTH))
        req = codec.parse_request(
            parse_json(header, settings.max_json_depth, "request header"), binary
        )
        timeout_ms = req.timeout_us / 1000.0 if req.timeout_us is not None else None
        deadline = dataplane.deadline(timeout_ms)
        wanted = requested_outputs(req)
        model.require_ready()
        batch = await input_batch(dataplane, model, req)
        logits = await dataplane.infer(
            model, batch, deadline, disconnected=lambda: wait_for_disconnect(request)
        )
        content, header_length = codec.encode_response(
            model.name,
            model.config.version,
            req.id or request_id(),  # none in the body: the request's X-Request-ID
            output_tensors(model, logits, wanted),
        )
        if header_length is None:
            return Response(content, media_type="application/json")
        return Response(
            content,
            media_type="application/octet-stream",
            headers={codec.HEADER_LENGTH: str(header_length)},
        )


def requested_outputs(req: codec.InferRequest) -> list[codec.OutputRequest]:
    if not req.outputs:  # absent or empty: every output
        return [codec.OutputRequest(name, req.binary_output) for name in schema.OUTPUTS]
    for out in req.outputs:
        if out.name not in schema.OUTPUTS:
            raise InvalidInput(
                f"unknown output {out.name!r}; the model has {', '.join(schema.OUTPUTS)}"
            )
    return req.outputs


def _accepted(model: ServedModel) -> str:
    crop = model.config.input.crop
    return (
        f"model {model.name!r} takes exactly one input: {schema.INPUT_PIXELS!r} (UINT8, shape "
        f"[N, {crop}, {crop}, 3], RGB pixels, NHWC) or {schema.INPUT_FILES!r} (BYTES, shape [N] "
        "or [N, 1], encoded JPEG/PNG/WebP files)"
    )


async def input_batch(dataplane: DataPlane, model: ServedModel, req: codec.InferRequest) -> Batch:
    """The request's one input -> uint8 (N, crop, crop, 3), the batch every backend takes."""
    if len(req.inputs) != 1 or req.inputs[0].name not in (schema.INPUT_PIXELS, schema.INPUT_FILES):
        names = ", ".join(repr(t.name) for t in req.inputs)
        raise InvalidInput(f"inputs {names} not accepted: {_accepted(model)}")
    tensor = req.inputs[0]
    crop = model.config.input.crop
    if tensor.name == schema.INPUT_PIXELS:
        if tensor.datatype != "UINT8":
            raise InvalidInput(
                f"input {schema.INPUT_PIXELS!r} is UINT8 pixels 0-255, not {tensor.datatype} "
                f"(the server never guesses a float scale); send encoded images as "
                f"{schema.INPUT_FILES!r} instead"
            )
        shape = tensor.shape
        if len(shape) != 4 or shape[1:] != [crop, crop, 3]:
            hint = " (that looks like NCHW; the model takes NHWC)" if shape[1:2] == [3] else ""
            raise InvalidInput(
                f"input {schema.INPUT_PIXELS!r} has shape {shape}; the model takes "
                f"[N, {crop}, {crop}, 3]{hint}"
            )
        dataplane.check_image_count(shape[0])
        assert isinstance(tensor.data, np.ndarray)
        return tensor.data
    if tensor.datatype != "BYTES":
        raise InvalidInput(f"input {schema.INPUT_FILES!r} must be BYTES, not {tensor.datatype}")
    if not (len(tensor.shape) == 1 or (len(tensor.shape) == 2 and tensor.shape[1] == 1)):
        raise InvalidInput(
            f"input {schema.INPUT_FILES!r} has shape {tensor.shape}; it takes [N] or [N, 1], "
            "one encoded image per row"
        )
    assert isinstance(tensor.data, list)
    files = tensor.data if tensor.binary else [_base64(e, i) for i, e in enumerate(tensor.data)]
    return await dataplane.decode_images(model, files)


def _base64(element: bytes, index: int) -> bytes:
    """JSON cannot carry raw image bytes: JSON `image_bytes` elements are base64 strings."""
    data = b64decode(element)
    if data is None:
        raise InvalidInput(
            f"input {schema.INPUT_FILES!r} element {index}: JSON elements must be base64; "
            "or send the raw files as binary tensor data"
        )
    return data


def output_tensors(
    model: ServedModel, logits: np.ndarray, wanted: list[codec.OutputRequest]
) -> list[codec.OutputTensor]:
    probs: np.ndarray | None = None  # float64: classification scores equal /v1 classify's
    out = []
    for req in wanted:
        if req.name == schema.OUTPUT_LOGITS:
            values = logits
        else:
            if probs is None:
                probs = softmax(logits)
            values = probs
        if req.classification:
            k = min(req.classification, values.shape[1])
            data = codec.classification(values, k, model.config.labels)
            out.append(
                codec.OutputTensor(req.name, "BYTES", data, [values.shape[0], k], req.binary)
            )
        else:
            out.append(
                codec.OutputTensor(
                    req.name,
                    "FP32",
                    values.astype(np.float32, copy=False),
                    list(values.shape),
                    req.binary,
                )
            )
    return out
