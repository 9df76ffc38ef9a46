"""What an image may cost to decode, and a fair way to share the decode threads.

An image's decode time follows its pixels and its format far more than its size in bytes (a
small flat PNG can cost more than a large baseline JPEG, which is decoded at reduced size by
DCT scaling). So, per image, from its header and a bounded look at its structure, before any
pixel is decoded (docs/hostile-clients.md has the measured costs):

- JPEG (baseline or progressive; both are decoded at reduced size): `max_image_pixels`, and at
  most `max_jpeg_scans` scans (each scan of a progressive JPEG is a pass over every block: a
  tiny file can repeat one hundreds of times).
- PNG, WebP, GIF, BMP (decoded at full size, then resized): `max_full_decode_pixels`.
- PNG: at most `max_png_chunks` chunks (Pillow spends a Python loop on each; a million empty
  ones before the image cost seconds), text and ICC chunks inflated to 1 MB each, 8 MB in all.
- EXIF: at most `max_exif_bytes` and `max_exif_entries` in its first directory (Pillow parses
  every entry in Python when it opens a JPEG); we read only the orientation, in one
  vectorised pass.
- Animations: only the first frame is decoded, so their length costs nothing and is not
  limited.

Over a limit: 413 with what was found and the limit. Under them, each image gets an estimated
cost (megapixels x its format's factor, in baseline-JPEG megapixels); an image costing more than
`decode_costly_cost` is *costly* and must take one of the few costly slots (`DecodeGate`); they
decode in threads of their own at a lower CPU priority (app/service.py), so cheap images always
find a decode thread free.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, PngImagePlugin

from app.config import Settings
from app.errors import PayloadTooLarge, QueueFull

# Pillow's own PNG text guards: 1 MB per zTXt/iTXt/iCCP chunk (its default), 8 MB in all
# (its default is 64 MB). Module globals: this process decodes only for us.
PngImagePlugin.MAX_TEXT_CHUNK = 1 << 20
PngImagePlugin.MAX_TEXT_MEMORY = 8 << 20

# Decode cost per megapixel relative to a baseline JPEG decoded at reduced size, measured with
# `python -m tests.costly_images` (rounded; ratios, so the machine's speed cancels out).
FORMAT_FACTOR = {"JPEG": 1.0, "PNG": 20.0, "WEBP": 25.0, "GIF": 10.0, "BMP": 12.0}
PROGRESSIVE_FACTOR_PER_SCAN = 0.5  # a 10-scan progressive JPEG costs ~5 baseline ones
FULL_DECODE_FORMATS = ("PNG", "WEBP", "GIF", "BMP")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class DecodeLimits:
    max_pixels: int
    max_full_decode_pixels: int
    max_jpeg_scans: int
    max_png_chunks: int
    max_exif_bytes: int
    max_exif_entries: int
    costly_cost: float

    @classmethod
    def from_settings(cls, settings: Settings) -> DecodeLimits:
        return cls(
            max_pixels=settings.max_image_pixels,
            max_full_decode_pixels=settings.max_full_decode_pixels,
            max_jpeg_scans=settings.max_jpeg_scans,
            max_png_chunks=settings.max_png_chunks,
            max_exif_bytes=settings.max_exif_bytes,
            max_exif_entries=settings.max_exif_entries,
            costly_cost=settings.decode_costly_cost,
        )

    @classmethod
    def unlimited(cls, max_pixels: int) -> DecodeLimits:
        """Only the overall pixel limit (benchmarks, and callers that pass a pixel count)."""
        big = 1 << 62
        return cls(max_pixels, max_pixels, big, big, big, big, float("inf"))


def jpeg_scans(data: bytes, limit: int) -> int:
    """Start-of-scan markers in a JPEG, counted up to limit + 1. Entropy-coded data never holds
    FF DA (an FF there is followed by 00 or a restart marker); an EXIF thumbnail may add one."""
    count, pos = 0, data.find(b"\xff\xda")
    while pos >= 0 and count <= limit:
        count += 1
        pos = data.find(b"\xff\xda", pos + 2)
    return count


def jpeg_exif(data: bytes, max_segments: int = 4096) -> bytes | None:
    """The APP1 EXIF payload of a JPEG (after 'Exif\\0\\0'), found by walking the marker
    segments before the first scan (a bounded walk: lengths only)."""
    pos, end = 2, len(data)
    for _ in range(max_segments):
        if pos + 4 > end or data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA or marker == 0xD9:
            return None
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker == 0xE1 and data[pos + 4 : pos + 10] == b"Exif\0\0":
            return data[pos + 10 : pos + 2 + length]
        pos += 2 + length
    return None


def exif_entries(tiff: bytes) -> int:
    """Entries of the first IFD of a TIFF-structured EXIF block (0 when unreadable)."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return 0
    order = "<" if tiff[:2] == b"II" else ">"
    (offset,) = struct.unpack_from(order + "I", tiff, 4)
    if offset + 2 > len(tiff):
        return 0
    return int(struct.unpack_from(order + "H", tiff, offset)[0])


def check_exif(tiff: bytes, limits: DecodeLimits) -> None:
    if len(tiff) > limits.max_exif_bytes:
        raise PayloadTooLarge(
            f"EXIF block of {len(tiff)} bytes; the limit is {limits.max_exif_bytes}"
        )
    entries = exif_entries(tiff)
    if entries > limits.max_exif_entries:
        raise PayloadTooLarge(
            f"EXIF directory of {entries} entries; the limit is {limits.max_exif_entries}"
        )


def png_chunks(data: bytes, limit: int) -> int:
    """Chunks of a PNG, counted up to limit + 1 (a bounded walk: lengths only, no CRC)."""
    pos, count, end = len(PNG_SIGNATURE), 0, len(data)
    while pos + 8 <= end and count <= limit:
        (length,) = struct.unpack_from(">I", data, pos)
        count += 1
        if data[pos + 4 : pos + 8] == b"IEND":
            break
        pos += 12 + length
    return count


def check(img: Image.Image, data: bytes, limits: DecodeLimits) -> float:
    """Refuse (413) an image over a per-format limit; else return its estimated cost."""
    width, height = img.size
    pixels = width * height
    fmt = img.format or ""
    if fmt in FULL_DECODE_FORMATS and pixels > limits.max_full_decode_pixels:
        raise PayloadTooLarge(
            f"{fmt} image is {width}x{height} = {pixels} pixels; {fmt} is decoded at full size, "
            f"so its limit is {limits.max_full_decode_pixels} (JPEG: {limits.max_pixels})"
        )
    factor = FORMAT_FACTOR.get(fmt, 20.0)
    if fmt == "JPEG" and (img.info.get("progressive") or img.info.get("progression")):
        scans = jpeg_scans(data, limits.max_jpeg_scans)
        if scans > limits.max_jpeg_scans:
            raise PayloadTooLarge(
                f"progressive JPEG of more than {limits.max_jpeg_scans} scans (each one is a "
                f"pass over the image); the limit is {limits.max_jpeg_scans}"
            )
        factor = max(1.0, PROGRESSIVE_FACTOR_PER_SCAN * scans)
    exif = img.info.get("exif")
    if isinstance(exif, bytes):
        check_exif(exif[6:] if exif.startswith(b"Exif\0\0") else exif, limits)
    return pixels / 1e6 * factor


def check_structure(data: bytes, limits: DecodeLimits) -> None:
    """Before Pillow reads the header: it loops over every chunk of a PNG before the image
    data, and parses every entry of a JPEG's EXIF (for its DPI)."""
    if data.startswith(b"\xff\xd8"):
        exif = jpeg_exif(data)
        if exif is not None:
            check_exif(exif, limits)
    elif data.startswith(PNG_SIGNATURE):
        chunks = png_chunks(data, limits.max_png_chunks)
        if chunks > limits.max_png_chunks:
            raise PayloadTooLarge(
                f"PNG of more than {limits.max_png_chunks} chunks; the limit is "
                f"{limits.max_png_chunks}"
            )


_ENTRY = np.dtype([("tag", "u2"), ("type", "u2"), ("count", "u4"), ("value", "V4")])


def exif_orientation(img: Image.Image) -> int:
    """EXIF orientation (1-8; 1 when absent or unreadable), from the first IFD only, read with
    one vectorised pass whatever its entry count."""
    exif = img.info.get("exif")
    if not isinstance(exif, bytes):
        return 1
    try:
        return _orientation(exif)
    except (struct.error, ValueError, TypeError):
        return 1  # unreadable EXIF: as stored (Pillow would have failed the image)


def _orientation(exif: bytes) -> int:
    tiff = exif[6:] if exif.startswith(b"Exif\0\0") else exif
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return 1
    order: Literal["<", ">"] = "<" if tiff[:2] == b"II" else ">"
    (offset,) = struct.unpack_from(order + "I", tiff, 4)
    if offset + 2 > len(tiff):
        return 1
    (count,) = struct.unpack_from(order + "H", tiff, offset)
    count = min(count, (len(tiff) - offset - 2) // 12)
    entries = np.frombuffer(tiff, _ENTRY.newbyteorder(order), count, offset + 2)
    hits = np.flatnonzero(entries["tag"] == EXIF_ORIENTATION)
    if not len(hits):
        return 1
    entry = entries[hits[0]]
    raw = bytes(entry["value"])
    if int(entry["type"]) == 3:  # SHORT
        value = struct.unpack_from(order + "H", raw)[0]
    elif int(entry["type"]) == 4:  # LONG
        value = struct.unpack_from(order + "I", raw)[0]
    else:
        return 1
    return int(value) if 1 <= value <= 8 else 1


TRANSPOSE = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}


def upright(img: Image.Image, orientation: int) -> Image.Image:
    """What ImageOps.exif_transpose does to the pixels, for an orientation read above."""
    for op in TRANSPOSE.get(orientation, ()):
        img = img.transpose(op)
    return img


class DecodeGate:
    """Admission to decoding, per process, answered at once (503 + Retry-After when full):

    - images being decoded or waiting for a decode thread: at most decode_threads +
      decode_queue_size (a request is admitted whole; one alone is always admitted);
    - costly images (estimated cost over decode_costly_cost): at most `costly_slots` decoding
      at once and `costly_queue` waiting for one, so they never hold every decode thread."""

    def __init__(self, settings: Settings, decode_threads: int) -> None:
        """`decode_threads`: the decode pool's size in force (the budget's when the setting
        is 0)."""
        self.capacity = decode_threads + settings.decode_queue_size
        self.costly_slots = max(1, decode_threads // 2)
        self.costly_queue = settings.decode_costly_queue
        self.retry_after_s = settings.retry_after_s
        self.admitted = 0
        self.costly_running = 0
        self.costly_waiting = 0
        self._freed = asyncio.Condition()

    def admit(self, images: int) -> None:
        if self.admitted and self.admitted + images > self.capacity:
            raise QueueFull(
                f"decode queue full ({self.admitted} images waiting or decoding); retry later",
                self.retry_after_s,
            )
        self.admitted += images

    def release(self, images: int) -> None:
        self.admitted -= images

    def decoding(self) -> int:
        """Images being decoded or waiting for a decode thread now (the batchers' adaptive
        schedulers start no wide batch while any are: app/batching.py)."""
        return self.admitted

    async def costly_slot(self) -> None:
        """Wait for a costly slot, or refuse at once when its waiting line is full."""
        if self.costly_running < self.costly_slots:
            self.costly_running += 1
            return
        if self.costly_waiting >= self.costly_queue:
            raise QueueFull(
                f"too many costly images being decoded ({self.costly_running} decoding, "
                f"{self.costly_waiting} waiting): send smaller or baseline-JPEG images, or "
                "retry later",
                self.retry_after_s,
            )
        self.costly_waiting += 1
        try:
            async with self._freed:
                await self._freed.wait_for(lambda: self.costly_running < self.costly_slots)
                self.costly_running += 1
        finally:
            self.costly_waiting -= 1

    async def costly_done(self) -> None:
        async with self._freed:
            self.costly_running -= 1
            self._freed.notify()
