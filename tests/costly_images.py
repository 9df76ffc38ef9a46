"""Generators of images whose decoding costs far more than their size, and a timer for them.

Each generator takes a scale (1.0: the size the issue measured, small values: regression-test
size) and returns the file's bytes. Used by tests/test_decode_limits.py (small ones) and, to
record the slowest inputs and their decode times in docs/hostile-clients.md:

    python -m tests.costly_images            # every case at full size: bytes, verdict, time
    python -m tests.costly_images --no-limits  # the same with the per-format limits lifted
"""

from __future__ import annotations

import argparse
import io
import struct
import time
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image

MPX36 = (6000, 6000)


def _save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _size(scale: float, base: tuple[int, int] = MPX36) -> tuple[int, int]:
    return max(16, int(base[0] * scale)), max(16, int(base[1] * scale))


def smooth(size: tuple[int, int]) -> Image.Image:
    """Photo-like smooth content (cheap to make at 36 Mpx: gradients only)."""
    w, h = size
    x = np.linspace(0, 6, w, dtype=np.float32)[None, :]
    y = np.linspace(0, 4, h, dtype=np.float32)[:, None]
    r = (127 + 100 * np.sin(x + y)).astype(np.uint8)
    g = (127 + 100 * np.sin(0.7 * x - y)).astype(np.uint8)
    b = (127 + 100 * np.cos(x * y / 8)).astype(np.uint8)
    return Image.merge("RGB", [Image.fromarray(c) for c in (r, g, b)])


def flat_png(scale: float = 1.0) -> bytes:
    """One colour: ~0.1 MB at 36 Mpx, every pixel still inflated and filtered."""
    return _save(Image.new("RGB", _size(scale), (120, 130, 140)), "PNG", optimize=False)


def progressive_jpeg(scale: float = 1.0) -> bytes:
    return _save(smooth(_size(scale)), "JPEG", quality=85, progressive=True)


def baseline_jpeg(scale: float = 1.0) -> bytes:
    return _save(smooth(_size(scale)), "JPEG", quality=85)


def _jpeg_segments(data: bytes) -> tuple[bytes, list[bytes], bytes]:
    """(everything before the first SOS, [each SOS segment with its entropy data], EOI)."""
    first = data.index(b"\xff\xda")
    scans, i = [], first
    while True:
        j = i + 2
        while True:  # the next marker that is not stuffing (FF00) or a restart (FFD0-D7)
            j = data.index(b"\xff", j + 1)
            if data[j + 1] != 0 and not 0xD0 <= data[j + 1] <= 0xD7:
                break
        scans.append(data[i:j])
        if data[j + 1] != 0xDA:
            return data[:first], scans, data[j:]
        i = j


def many_scan_jpeg(scale: float = 1.0, scans: int = 250) -> bytes:
    """A flat progressive JPEG whose DC scan is repeated `scans` times: each repeat costs the
    decoder a pass over every block, and the file stays tiny (libjpeg only warns)."""
    data = _save(Image.new("RGB", _size(scale), (90, 100, 110)), "JPEG", progressive=True)
    head, segments, tail = _jpeg_segments(data)
    return head + segments[0] * scans + b"".join(segments[1:]) + tail


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def _png_parts(data: bytes) -> tuple[bytes, bytes]:
    """(signature + IHDR, the zlib stream of every IDAT joined)."""
    pos, head, idat = 8, data[:8], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IHDR":
            head += data[pos : pos + 12 + length]
        elif kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return head, idat


def many_idat_png(scale: float = 1.0, chunk: int = 1) -> bytes:
    """The flat PNG with its image data cut into IDAT chunks of `chunk` bytes."""
    head, idat = _png_parts(flat_png(scale))
    parts = [_chunk(b"IDAT", idat[i : i + chunk]) for i in range(0, len(idat), chunk)]
    return head + b"".join(parts) + _chunk(b"IEND", b"")


def many_chunk_png(scale: float = 1.0, chunks: int = 1_000_000) -> bytes:
    """A small PNG preceded by `chunks` empty private ancillary chunks (13 MB at a million)."""
    head, idat = _png_parts(_save(Image.new("RGB", _size(scale, (64, 64)), 7), "PNG"))
    filler = _chunk(b"prVt", b"") * chunks
    return head + filler + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def text_bomb_png(scale: float = 1.0, chunks: int = 64) -> bytes:
    """zTXt and iCCP chunks that inflate to 1000 times their size (Pillow caps each at 1 MB
    and all text at 64 MB by default)."""
    head, idat = _png_parts(_save(Image.new("RGB", (64, 64), 7), "PNG"))
    bomb = zlib.compress(b"\0" * int(64_000_000 * scale), 9)
    extra = _chunk(b"iCCP", b"icc\0\0" + bomb)
    for i in range(chunks):
        extra += _chunk(b"zTXt", f"k{i}".encode() + b"\0\0" + bomb)
    return head + extra + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def long_gif(scale: float = 1.0, frames: int = 5000) -> bytes:
    """A 5,000-frame animation of 500x500 frames (only the first is ever decoded)."""
    size = _size(scale, (500, 500))
    first = Image.new("P", size, 1)
    rest = [Image.new("P", size, 1 + (i % 200)) for i in range(int(frames * max(scale, 0.01)))]
    return _save(first, "GIF", save_all=True, append_images=rest, duration=10)


def long_webp(scale: float = 1.0, frames: int = 500) -> bytes:
    size = _size(scale, (500, 500))
    imgs = [Image.new("RGB", size, (i % 256, 0, 0)) for i in range(int(frames * max(scale, 0.02)))]
    return _save(imgs[0], "WEBP", save_all=True, append_images=imgs[1:], duration=10)


def huge_exif_png(scale: float = 1.0) -> bytes:
    """A PNG with a multi-megabyte eXIf chunk: IFDs of 65,535 entries chained end to end."""
    entries = 65535
    ifd_count = max(1, int(40 * scale))
    exif = bytearray(b"MM\0\x2a\0\0\0\x08")
    for n in range(ifd_count):
        exif += struct.pack(">H", entries)
        for i in range(entries):
            exif += struct.pack(">HHII", 0x9000 + (i % 4096), 4, 1, i)  # LONG, one value
        nxt = len(exif) + 4 if n + 1 < ifd_count else 0
        exif += struct.pack(">I", nxt)
    head, idat = _png_parts(_save(Image.new("RGB", (64, 64), 7), "PNG"))
    return head + _chunk(b"eXIf", bytes(exif)) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def huge_exif_jpeg(scale: float = 1.0) -> bytes:
    """A JPEG whose APP1 EXIF holds one IFD of as many entries as 64 KB allows, with an
    orientation (so exif_transpose must parse it)."""
    entries = int(5400 * scale) or 1
    body = bytearray(b"MM\0\x2a\0\0\0\x08") + struct.pack(">H", entries)
    body += struct.pack(">HHHH", 0x0112, 3, 1, 6) + b"\0\0"  # orientation 6
    for i in range(entries - 1):
        body += struct.pack(">HHII", 0x9000 + (i % 4096), 4, 1, i)
    body += b"\0\0\0\0"
    app1 = b"Exif\0\0" + bytes(body)
    jpeg = _save(smooth((640, 480)), "JPEG", quality=85)
    segment = b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1
    return jpeg[:2] + segment + jpeg[2:]


def flat_image(fmt: str, scale: float = 1.0) -> bytes:
    img = Image.new("RGB", _size(scale), (120, 130, 140))
    return _save(img, fmt, **({"lossless": False, "quality": 50} if fmt == "WEBP" else {}))


CASES: dict[str, Callable[[float], bytes]] = {
    "flat 36 Mpx PNG": flat_png,
    "flat 10 Mpx BMP": lambda s: flat_image("BMP", s * 0.53),
    "flat 16 Mpx WebP": lambda s: flat_image("WEBP", s * 2 / 3),
    "flat 36 Mpx GIF": lambda s: flat_image("GIF", s),
    "36 Mpx baseline JPEG, smooth": baseline_jpeg,
    "36 Mpx progressive JPEG, smooth": progressive_jpeg,
    "36 Mpx progressive JPEG, 250 scans": many_scan_jpeg,
    "36 Mpx PNG, 1-byte IDAT chunks": many_idat_png,
    "PNG after 1,000,000 empty chunks": many_chunk_png,
    "PNG with 64 zTXt bombs and an iCCP bomb": text_bomb_png,
    "PNG with 40 x 65,535 EXIF entries": huge_exif_png,
    "JPEG with a 64 KB EXIF of 5,400 entries": huge_exif_jpeg,
    "GIF of 5,000 frames": long_gif,
    "WebP of 500 frames": long_webp,
}


def main() -> None:
    from app.config import PreprocessConfig, Settings
    from app.decode_limits import DecodeLimits
    from app.errors import ServeError
    from app.preprocess import decode

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-limits", action="store_true", help="lift the per-format limits")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many decodes")
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    settings = Settings()
    limits = DecodeLimits.from_settings(settings)
    if args.no_limits:
        limits = DecodeLimits.unlimited(settings.max_image_pixels)
    cfg = PreprocessConfig()
    print(f"{'input':44} {'bytes':>11} {'result':>8} {'decode ms':>10}")
    for name, make in CASES.items():
        data = make(args.scale)
        best, verdict = float("inf"), "ok"
        for _ in range(args.repeat):
            started = time.perf_counter()
            try:
                decode(data, cfg, limits)
            except ServeError as exc:
                verdict = type(exc).__name__
            best = min(best, time.perf_counter() - started)
        print(f"{name:44} {len(data):>11,} {verdict:>8} {best * 1000:>10.1f}")


if __name__ == "__main__":
    main()
