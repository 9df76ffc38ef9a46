"""Reading request bodies within limits: size (413), content type (415), multipart parts,
base64 JSON. Shared by every route that takes images."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from app.config import Settings
from app.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

RAW_TYPES = ("image/", "application/octet-stream")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing early (Content-Length) or while streaming past `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise InvalidInput(f"Content-Length {declared!r} is not a number") from None
        if size > limit:
            raise PayloadTooLarge(f"body of {size} bytes; the limit is {limit}")
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


def json_depth(value: Any, limit: int) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise InvalidInput(f"JSON nested deeper than {limit} levels")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def parse_json(body: bytes, settings: Settings) -> Any:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"body is not valid JSON: {exc}") from None
    json_depth(value, settings.max_json_depth)
    return value


def decode_base64(text: Any, index: int) -> bytes:
    if not isinstance(text, str):
        raise InvalidInput(f"images[{index}] must be a base64 string")
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"images[{index}] is not valid base64") from None


async def read_images(request: Request, settings: Settings) -> list[bytes]:
    """The images of a classify request: raw body, multipart files, or JSON base64."""
    kind = media_type(request)
    if kind.startswith(RAW_TYPES):
        return [await read_body(request, settings.max_body_bytes)]
    if kind == "multipart/form-data":
        return await _multipart_images(request, settings)
    if kind == "application/json":
        value = parse_json(await read_body(request, settings.max_body_bytes), settings)
        images = value.get("images") if isinstance(value, dict) else None
        if not isinstance(images, list):
            raise InvalidInput('JSON body must be {"images": ["<base64>", ...]}')
        if len(images) > settings.max_images_per_request:
            raise PayloadTooLarge(
                f"{len(images)} images in one request; the limit is {settings.max_images_per_request}"
            )
        return [decode_base64(text, i) for i, text in enumerate(images)]
    raise UnsupportedMediaType(
        f"Content-Type {kind or '(none)'!r} is not accepted; send image/* (one image), "
        'multipart/form-data (image files) or application/json ({"images": [base64, ...]})'
    )


async def _multipart_images(request: Request, settings: Settings) -> list[bytes]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > settings.max_body_bytes:
        raise PayloadTooLarge(f"body of {declared} bytes; the limit is {settings.max_body_bytes}")
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
        if len(files) > settings.max_images_per_request:
            raise PayloadTooLarge(
                f"{len(files)} images in one request; the limit is {settings.max_images_per_request}"
            )
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
