"""Reading request bodies within limits: size (413), content type (415), multipart parts,
base64 JSON; and noticing the client hang up once the body is read. Shared by every route that
takes images; the parsing itself is app.api.inputs."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from app.api.inputs import b64decode, declared_length, parse_json
from app.config import Settings
from app.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from app.service import DataPlane

RAW_TYPES = ("image/", "application/octet-stream")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing early (Content-Length) or while streaming past `limit`."""
    declared_length(request.headers.get("content-length"), limit)
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"body larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def decode_base64(text: Any, index: int) -> bytes:
    data = b64decode(text) if isinstance(text, str) else None
    if data is None:
        what = "is not valid base64" if isinstance(text, str) else "must be a base64 string"
        raise InvalidInput(f"images[{index}] {what}")
    return data


async def read_images(request: Request, settings: Settings, dataplane: DataPlane) -> list[bytes]:
    """The images of a classify request: raw body, multipart files, or JSON base64. The image
    count (DataPlane.check_image_count) is checked as soon as it is known: early, before the
    base64 is decoded or the parts are read."""
    kind = media_type(request)
    if kind.startswith(RAW_TYPES):
        return [await read_body(request, settings.max_body_bytes)]
    if kind == "multipart/form-data":
        return await _multipart_images(request, settings, dataplane)
    if kind == "application/json":
        body = await read_body(request, settings.max_body_bytes)
        value = parse_json(body, settings.max_json_depth)
        images = value.get("images") if isinstance(value, dict) else None
        if not isinstance(images, list):
            raise InvalidInput('JSON body must be {"images": ["<base64>", ...]}')
        dataplane.check_image_count(len(images))  # early: before decoding the base64
        return [decode_base64(text, i) for i, text in enumerate(images)]
    raise UnsupportedMediaType(
        f"Content-Type {kind or '(none)'!r} is not accepted; send image/* (one image), "
        'multipart/form-data (image files) or application/json ({"images": [base64, ...]})'
    )


async def _multipart_images(
    request: Request, settings: Settings, dataplane: DataPlane
) -> list[bytes]:
    declared_length(request.headers.get("content-length"), settings.max_body_bytes)
    try:
        form = await request.form(
            max_files=settings.max_multipart_parts,
            max_fields=settings.max_multipart_parts,
            max_part_size=settings.max_body_bytes,
        )
    except MultiPartException as exc:
        raise InvalidInput(f"multipart body rejected: {exc.message}") from None
    try:
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise InvalidInput("multipart body holds no file part; send images as file parts")
        dataplane.check_image_count(len(files))  # early: before reading the parts
        total, out = 0, []
        for f in files:
            data = await f.read()
            total += len(data)
            if total > settings.max_body_bytes:
                raise PayloadTooLarge(
                    f"images larger than the limit of {settings.max_body_bytes} bytes"
                )
            out.append(data)
        return out
    finally:
        await form.close()


async def wait_for_disconnect(request: Request) -> None:
    """Completes when the client hangs up (the body has been read before this is awaited)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
