"""POST /v1/models/{name}/classify: raw image body, multipart files, or JSON base64 -> top-k."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from app.api.http.body import read_images, wait_for_disconnect
from app.api.http.deps import DataPlaneDep, SettingsDep
from app.api.recording import recorded

router = APIRouter(tags=["classify"])

_IMAGE_SCHEMA = {"type": "string", "format": "binary"}
OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "image/jpeg": {"schema": _IMAGE_SCHEMA},
            "image/png": {"schema": _IMAGE_SCHEMA},
            "image/webp": {"schema": _IMAGE_SCHEMA},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"images": {"type": "array", "items": _IMAGE_SCHEMA}},
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["images"],
                    "properties": {
                        "images": {"type": "array", "items": {"type": "string", "format": "byte"}}
                    },
                }
            },
        },
    }
}


@router.post(
    "/v1/models/{name}/classify",
    openapi_extra=OPENAPI_BODY,
    summary="Classify one or many images",
    responses={400: {}, 404: {}, 413: {}, 415: {}, 503: {}, 504: {}},
)
async def classify(
    name: str,
    request: Request,
    dataplane: DataPlaneDep,
    settings: SettingsDep,
    top_k: Annotated[
        int,
        Query(
            ge=1,
            le=1000,
            description="Predictions per image, best first (at most RESNET_SERVE_MAX_TOP_K).",
        ),
    ] = 5,
    timeout_ms: Annotated[
        float | None, Query(ge=1, le=600_000, description="Deadline for this request, in ms.")
    ] = None,
) -> Response:
    model = dataplane.model(name)  # 404 before reading a byte of the body
    with recorded(model.telemetry, "classify"):
        dataplane.check_top_k(top_k)  # early (classify checks it too): before the upload is read
        images = await read_images(request, settings, dataplane)
        results = await dataplane.classify(
            model, images, top_k, timeout_ms, disconnected=lambda: wait_for_disconnect(request)
        )
        return JSONResponse(
            {
                "model": model.name,
                "predictions": [
                    [
                        {"index": p.index, "label": p.label, "probability": p.probability}
                        for p in row
                    ]
                    for row in results
                ],
            }
        )
