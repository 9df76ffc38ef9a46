"""Reading input, one home for every adapter (/v1 classify, V2, ...): JSON with a nesting
limit, base64 images (data URLs too), the declared Content-Length. Pure functions, no web
framework; the image-count limit is the data plane's (DataPlane.check_image_count)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from app.errors import InvalidInput, PayloadTooLarge


def declared_length(value: str | None, limit: int) -> None:
    """A Content-Length header: refused at once when above `limit` (413), 400 if not a number.
    None (chunked, or no body): the size is checked while reading."""
    if value is None:
        return
    try:
        size = int(value)
    except ValueError:
        raise InvalidInput(f"Content-Length {value!r} is not a number") from None
    if size > limit:
        raise PayloadTooLarge(f"body of {size} bytes; the limit is {limit}")


def json_depth(value: Any, limit: int) -> None:
    """Raise when `value` nests deeper than `limit` levels (a scalar is one level)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise InvalidInput(f"JSON nested deeper than {limit} levels")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def parse_json(raw: bytes, max_depth: int, what: str = "body") -> Any:
    """JSON of a request (`what` names it in errors), at most `max_depth` levels deep."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc}") from None
    json_depth(value, max_depth)
    return value


def b64decode(text: str | bytes) -> bytes | None:
    """Base64 (standard alphabet, padded) or a base64 data URL -> bytes; None if invalid."""
    if isinstance(text, str):
        if text.startswith("data:"):
            text = text.partition(",")[2]
    elif text.startswith(b"data:"):
        text = text.partition(b",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
