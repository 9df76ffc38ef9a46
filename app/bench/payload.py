"""Image files -> ready-made HTTP requests, built once before any load is sent.

Each request is a complete HTTP/1.1 message (request line, headers, body) held as one bytes
object, so sending it costs one transport write and no per-request encoding.

Modes:
  raw        POST /v1/models/{model}/classify, body = one JPEG (image/jpeg)
  multipart  POST /v1/models/{model}/classify, multipart/form-data, K file parts "images"
  v2         POST /v2/models/{model}/infer, KServe V2 with the binary tensor data extension:
             a BYTES tensor "image_bytes" [K] (each element: 4-byte little-endian length + bytes)
  v2-pixels  POST /v2/models/{model}/infer, a UINT8 tensor "images" [K, H, W, 3], decoded and
             cropped on the client once, before the load starts
"""

from __future__ import annotations

import json
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

MODES = ("raw", "multipart", "v2", "v2-pixels")
IMAGE_SUFFIXES = (".jpg", ".jpeg")
DEFAULT_PATHS = {
    "raw": "/v1/models/{model}/classify",
    "multipart": "/v1/models/{model}/classify",
    "v2": "/v2/models/{model}/infer",
    "v2-pixels": "/v2/models/{model}/infer",
}
V2_BYTES_INPUT = "image_bytes"
V2_PIXELS_INPUT = "images"
V2_OUTPUT = "logits"


@dataclass(frozen=True)
class Body:
    """One request body and what it carries."""

    data: bytes
    content_type: str
    images: int
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str, path: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError(f"only http:// URLs are supported, not {url!r}")
        if not parts.hostname:
            raise ValueError(f"URL {url!r} names no host")
        return cls(parts.hostname, parts.port or 80, path)

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"


def load_images(directory: Path, limit: int | None = None) -> list[bytes]:
    """Every JPEG file of a folder (sorted by name), read once into memory."""
    if not directory.is_dir():
        raise FileNotFoundError(f"image folder {directory} does not exist")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if limit is not None:
        files = files[:limit]
    if not files:
        raise FileNotFoundError(f"no .jpg or .jpeg file in {directory}")
    return [p.read_bytes() for p in files]


def raw_body(image: bytes) -> Body:
    return Body(image, "image/jpeg", 1)


def multipart_body(images: list[bytes]) -> Body:
    boundary = uuid.uuid4().hex
    parts = []
    for i, image in enumerate(images):
        parts.append(
            (
                f"--{boundary}\r\n"
                f'Content-Disposition: form-data; name="images"; filename="image{i}.jpg"\r\n'
                "Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            + image
            + b"\r\n"
        )
    data = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return Body(data, f"multipart/form-data; boundary={boundary}", len(images))


def _v2_body(header: dict[str, object], tensor: bytes, images: int) -> Body:
    head = json.dumps(header, separators=(",", ":")).encode()
    return Body(
        head + tensor,
        "application/octet-stream",
        images,
        (("Inference-Header-Content-Length", str(len(head))),),
    )


def v2_bytes_body(images: list[bytes]) -> Body:
    """A V2 BYTES tensor in the binary data extension: per element, uint32 LE length + bytes."""
    tensor = b"".join(struct.pack("<I", len(image)) + image for image in images)
    header = {
        "inputs": [
            {
                "name": V2_BYTES_INPUT,
                "datatype": "BYTES",
                "shape": [len(images)],
                "parameters": {"binary_data_size": len(tensor)},
            }
        ],
        "outputs": [{"name": V2_OUTPUT, "parameters": {"binary_data": True}}],
    }
    return _v2_body(header, tensor, len(images))


def v2_pixels_body(pixels: np.ndarray) -> Body:
    """A V2 UINT8 tensor [K, H, W, 3] of images already decoded and cropped."""
    if pixels.dtype != np.uint8 or pixels.ndim != 4:
        raise ValueError(f"pixels must be uint8 [K, H, W, 3], got {pixels.dtype} {pixels.shape}")
    tensor = np.ascontiguousarray(pixels).tobytes()
    header: dict[str, object] = {
        "inputs": [
            {
                "name": V2_PIXELS_INPUT,
                "datatype": "UINT8",
                "shape": list(pixels.shape),
                "parameters": {"binary_data_size": len(tensor)},
            }
        ],
        "outputs": [{"name": V2_OUTPUT, "parameters": {"binary_data": True}}],
    }
    return _v2_body(header, tensor, int(pixels.shape[0]))


def decode_for_pixels(images: list[bytes], crop: int = 224, resize: int = 256) -> list[np.ndarray]:
    """What the server's decoder would make of each image, for v2-pixels mode."""
    from app.config import PreprocessConfig
    from app.preprocess import decode

    cfg = PreprocessConfig(resize=resize, crop=crop)
    return [decode(image, cfg, max_pixels=1 << 62) for image in images]


def build_bodies(images: list[bytes], mode: str, per_request: int) -> list[Body]:
    """One body per image in the folder (K consecutive images each, wrapping around), so the
    load cycles through every file."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if per_request < 1:
        raise ValueError("images per request must be at least 1")
    if mode == "raw" and per_request != 1:
        raise ValueError("raw mode sends one image per request; use multipart or v2 for more")
    count = len(images)
    groups = [[images[(i + j) % count] for j in range(per_request)] for i in range(count)]
    if mode == "raw":
        return [raw_body(g[0]) for g in groups]
    if mode == "multipart":
        return [multipart_body(g) for g in groups]
    if mode == "v2":
        return [v2_bytes_body(g) for g in groups]
    pixels = decode_for_pixels(images)
    return [
        v2_pixels_body(np.stack([pixels[(i + j) % count] for j in range(per_request)]))
        for i in range(count)
    ]


def http_request(target: Target, body: Body, headers: list[tuple[str, str]] | None = None) -> bytes:
    """The whole HTTP/1.1 POST message, keep-alive."""
    lines = [
        f"POST {target.path} HTTP/1.1",
        f"Host: {target.authority}",
        "User-Agent: resnet-serve-bench",
        "Accept: */*",
        "Connection: keep-alive",
        f"Content-Type: {body.content_type}",
        f"Content-Length: {len(body.data)}",
    ]
    lines += [f"{k}: {v}" for k, v in (*body.headers, *(headers or []))]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body.data
