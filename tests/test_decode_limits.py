"""Per-format decode limits and the decode gate (app/decode_limits.py), on crafted inputs made
by tests/costly_images.py; the small ones live in tests/data/costly as regression inputs."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from app.config import PreprocessConfig, Settings
from app.decode_limits import DecodeGate, DecodeLimits, exif_orientation
from app.errors import InvalidInput, PayloadTooLarge, QueueFull
from app.preprocess import decode, open_checked
from tests import costly_images as gen
from tests.conftest import encode, synthetic_photo

CFG = PreprocessConfig()
LIMITS = DecodeLimits.from_settings(Settings())
COSTLY = Path(__file__).parent / "data" / "costly"


@pytest.mark.parametrize("path", sorted(COSTLY.glob("*.bin")), ids=lambda p: p.name)
def test_crafted_inputs_are_refused_fast_with_a_clear_413(path: Path) -> None:
    data = path.read_bytes()
    limits = replace(LIMITS, max_png_chunks=500)  # the 1-byte IDAT file has 850 chunks
    started = time.perf_counter()
    with pytest.raises(PayloadTooLarge) as caught:
        decode(data, CFG, limits)
    assert time.perf_counter() - started < 0.5
    assert "limit" in caught.value.message
    # without the limits they decode (they are regression inputs, not broken files)
    assert decode(data, CFG, 1 << 40).shape == (224, 224, 3)


def test_generated_cases_hit_their_limit() -> None:
    cases = {
        "scans": (gen.many_scan_jpeg(0.03, scans=40), "more than 32 scans"),
        "chunks": (gen.many_chunk_png(1.0, 9000), "8192 chunks"),
        "exif png": (gen.huge_exif_png(0.025), "65535 entries"),
        "exif jpeg": (gen.huge_exif_jpeg(0.2), "1080 entries"),
    }
    for name, (data, expected) in cases.items():
        with pytest.raises(PayloadTooLarge) as caught:
            decode(data, CFG, LIMITS)
        assert expected in caught.value.message, name


def test_full_decode_formats_have_their_own_pixel_limit() -> None:
    limits = replace(LIMITS, max_pixels=200_000, max_full_decode_pixels=50_000)
    img = synthetic_photo(1, (300, 300))  # 90,000 pixels
    assert decode(encode(img, "JPEG"), CFG, limits).shape == (224, 224, 3)
    for fmt in ("PNG", "WEBP", "GIF", "BMP"):
        with pytest.raises(PayloadTooLarge, match=f"{fmt} is decoded at full size"):
            decode(encode(img, fmt), CFG, limits)


def test_png_text_bombs_are_refused_by_pillows_own_caps() -> None:
    with pytest.raises(InvalidInput, match="too large"):
        decode(gen.text_bomb_png(0.03, chunks=2), CFG, LIMITS)


def test_long_animations_decode_only_their_first_frame() -> None:
    started = time.perf_counter()
    for data in (gen.long_gif(0.1, frames=2000), gen.long_webp(0.2, frames=200)):
        assert decode(data, CFG, LIMITS).shape == (224, 224, 3)
    assert time.perf_counter() - started < 2.0


def test_cost_estimate_follows_format_and_scans() -> None:
    img = synthetic_photo(2, (400, 300))
    base = open_checked(encode(img, "JPEG"), LIMITS)[1]
    progressive = open_checked(encode(img, "JPEG", progressive=True), LIMITS)[1]
    png = open_checked(encode(img, "PNG"), LIMITS)[1]
    assert base == pytest.approx(0.12)
    assert 3 * base < progressive < png


@pytest.mark.parametrize("orientation", range(1, 9))
def test_bounded_exif_orientation_turns_images_as_pillow_does(orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(synthetic_photo(3, (320, 200)), "JPEG", exif=exif, quality=95)
    img = Image.open(__import__("io").BytesIO(data))
    assert exif_orientation(img) == orientation
    expected = ImageOps.exif_transpose(img)
    ours = decode(data, PreprocessConfig(resize=200, crop=200), LIMITS)
    ref = expected.resize(
        (200, int(200 * expected.height / expected.width))
        if expected.width <= expected.height
        else (int(200 * expected.width / expected.height), 200),
        Image.Resampling.BILINEAR,
    )
    left, top = (ref.width - 200) // 2, (ref.height - 200) // 2
    ref_arr = np.asarray(ref.crop((left, top, left + 200, top + 200)), dtype=np.int16)
    assert np.abs(ours.astype(np.int16) - ref_arr).mean() < 2.0


def test_unreadable_exif_is_ignored() -> None:
    img = Image.new("RGB", (8, 8))
    for junk in (b"Exif\0\0MM\0*\xff\xff\xff\xff", b"Exif\0\0II*\0\x08\0\0\0\xff\xff", b"xx"):
        img.info["exif"] = junk
        assert exif_orientation(img) == 1


def test_decode_gate_refuses_at_once_when_full() -> None:
    async def scenario() -> None:
        gate = DecodeGate(
            Settings(decode_queue_size=1, decode_costly_queue=1, retry_after_s=3), decode_threads=2
        )
        gate.admit(2)
        gate.admit(1)
        with pytest.raises(QueueFull) as caught:
            gate.admit(1)
        assert caught.value.retry_after_s == 3
        gate.release(3)
        gate.admit(10)  # alone: a request larger than the queue still runs
        gate.release(10)

        await gate.costly_slot()  # one costly slot of two threads
        waiting = asyncio.ensure_future(gate.costly_slot())
        await asyncio.sleep(0.01)
        assert not waiting.done() and gate.costly_waiting == 1
        with pytest.raises(QueueFull, match="costly"):
            await gate.costly_slot()  # the waiting line (1) is full: refused at once
        await gate.costly_done()
        await asyncio.wait_for(waiting, 1)
        assert gate.costly_running == 1 and gate.costly_waiting == 0

    asyncio.run(scenario())
