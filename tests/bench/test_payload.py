"""Request bodies: each mode decodes back to the images it was built from."""

from __future__ import annotations

import email.message
import email.parser
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from app.bench.payload import (
    Target,
    build_bodies,
    http_request,
    load_images,
    multipart_body,
    v2_bytes_body,
    v2_pixels_body,
)


def split_v2(data: bytes, headers: tuple[tuple[str, str], ...]) -> tuple[dict, bytes]:
    length = int(dict(headers)["Inference-Header-Content-Length"])
    return json.loads(data[:length]), data[length:]


def test_multipart_parts_are_the_images(jpegs: list[bytes]) -> None:
    body = multipart_body(jpegs[:3])
    msg = email.parser.BytesParser().parsebytes(
        b"Content-Type: " + body.content_type.encode() + b"\r\n\r\n" + body.data
    )
    payload = msg.get_payload()
    assert isinstance(payload, list)
    parts = [p for p in payload if isinstance(p, email.message.Message)]
    assert len(parts) == len(payload)
    assert [p.get_param("name", header="content-disposition") for p in parts] == ["images"] * 3
    assert [p.get_payload(decode=True) for p in parts] == jpegs[:3]
    assert body.images == 3


def test_v2_bytes_body_follows_the_binary_extension(jpegs: list[bytes]) -> None:
    body = v2_bytes_body(jpegs[:2])
    header, tensor = split_v2(body.data, body.headers)
    (inp,) = header["inputs"]
    assert inp["name"] == "image_bytes" and inp["datatype"] == "BYTES" and inp["shape"] == [2]
    assert inp["parameters"]["binary_data_size"] == len(tensor)
    assert header["outputs"] == [{"name": "logits", "parameters": {"binary_data": True}}]
    elements, offset = [], 0
    while offset < len(tensor):
        (n,) = struct.unpack_from("<I", tensor, offset)
        elements.append(tensor[offset + 4 : offset + 4 + n])
        offset += 4 + n
    assert elements == jpegs[:2]


def test_v2_pixels_body_is_uint8_nhwc() -> None:
    pixels = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    body = v2_pixels_body(pixels)
    header, tensor = split_v2(body.data, body.headers)
    (inp,) = header["inputs"]
    assert (inp["name"], inp["datatype"], inp["shape"]) == ("images", "UINT8", [2, 4, 4, 3])
    assert np.array_equal(np.frombuffer(tensor, np.uint8).reshape(2, 4, 4, 3), pixels)
    with pytest.raises(ValueError):
        v2_pixels_body(pixels.astype(np.float32))


def test_build_bodies_cycles_every_file(jpegs: list[bytes]) -> None:
    bodies = build_bodies(jpegs, "multipart", 2)
    assert len(bodies) == len(jpegs) and all(b.images == 2 for b in bodies)
    raw = build_bodies(jpegs, "raw", 1)
    assert [b.data for b in raw] == jpegs
    pixels = build_bodies(jpegs[:2], "v2-pixels", 3)
    header, tensor = split_v2(pixels[0].data, pixels[0].headers)
    assert header["inputs"][0]["shape"] == [3, 224, 224, 3] and len(tensor) == 3 * 224 * 224 * 3
    with pytest.raises(ValueError, match="raw mode"):
        build_bodies(jpegs, "raw", 2)
    with pytest.raises(ValueError, match="mode"):
        build_bodies(jpegs, "grpc", 1)


def test_http_request_is_complete(jpegs: list[bytes]) -> None:
    target = Target.parse("http://127.0.0.1:8123", "/v2/models/m/infer")
    body = v2_bytes_body(jpegs[:1])
    msg = http_request(target, body, [("Authorization", "Bearer t")])
    head, _, rest = msg.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v2/models/m/infer HTTP/1.1"
    assert "Host: 127.0.0.1:8123" in lines and "Authorization: Bearer t" in lines
    assert f"Content-Length: {len(body.data)}" in lines
    assert any(line.startswith("Inference-Header-Content-Length: ") for line in lines)
    assert rest == body.data
    with pytest.raises(ValueError):
        Target.parse("https://example.org", "/")


def test_load_images(tmp_path: Path, jpegs: list[bytes]) -> None:
    for i, data in enumerate(jpegs):
        (tmp_path / f"{i}.JPG").write_bytes(data)
    (tmp_path / "notes.txt").write_text("not an image")
    assert load_images(tmp_path) == jpegs
    assert load_images(tmp_path, limit=2) == jpegs[:2]
    with pytest.raises(FileNotFoundError):
        load_images(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no .jpg"):
        load_images(empty)
