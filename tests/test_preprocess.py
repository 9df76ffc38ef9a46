"""Preprocessing matches torchvision's reference transforms; every image kind comes out RGB."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from torchvision import transforms as T

from app.config import PreprocessConfig
from app.errors import InvalidInput, PayloadTooLarge
from app.preprocess import decode
from tests.conftest import encode, synthetic_photo

CFG = PreprocessConfig()
LIMIT = 40_000_000


def reference(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    return np.asarray(T.Compose([T.Resize(256), T.CenterCrop(224)])(img))


def test_matches_torchvision_exactly_without_draft(jpegs: list[bytes]) -> None:
    for data in jpegs:
        ours = decode(data, CFG, LIMIT)
        assert ours.shape == (224, 224, 3) and ours.dtype == np.uint8
        diff = np.abs(ours.astype(int) - reference(data))
        assert diff.max() <= 1
        exact = decode(data, PreprocessConfig(use_draft=False), LIMIT)
        assert np.array_equal(exact, reference(data))


def test_fast_decoding_resizes_only_the_crop_within_a_grey_level() -> None:
    # shapes where the crop is a small part of the resized image, both orientations, odd sizes
    for seed, size in enumerate([(500, 375), (375, 500), (1023, 257), (300, 299), (640, 480)]):
        data = encode(synthetic_photo(seed, size), quality=90)
        fast = decode(data, CFG, LIMIT)
        exact = decode(data, PreprocessConfig(use_draft=False), LIMIT)
        diff = np.abs(fast.astype(int) - exact)
        assert diff.max() <= 1 and diff.mean() < 0.05, (size, diff.max(), diff.mean())


def test_reduced_size_decoding_stays_within_one_grey_level_on_average() -> None:
    for seed in range(3):
        data = encode(synthetic_photo(seed, (2000, 1500)), quality=92)
        ours = decode(data, CFG, LIMIT)
        diff = np.abs(ours.astype(int) - reference(data))
        assert diff.mean() <= 1.0, diff.mean()
        exact = decode(data, PreprocessConfig(use_draft=False), LIMIT)
        assert np.abs(exact.astype(int) - reference(data)).max() <= 1


def test_exif_rotated_photo_is_classified_upright() -> None:
    upright = synthetic_photo(7, (400, 300))
    rotated = upright.transpose(Image.Transpose.ROTATE_90)  # stored sideways...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...with "rotate 90 CW to display" (orientation 6)
    data = encode(rotated, "PNG", exif=exif)
    ours = decode(data, CFG, LIMIT)
    expect = decode(encode(upright, "PNG"), CFG, LIMIT)
    assert np.abs(ours.astype(int) - expect).max() <= 1


@pytest.mark.parametrize(
    "mode",
    ["L", "LA", "RGBA", "P", "CMYK", "I;16", "1"],
)
def test_modes_become_rgb(mode: str) -> None:
    base = synthetic_photo(3, (320, 240))
    if mode == "I;16":
        grey = np.asarray(base.convert("L"), dtype=np.uint16) * 257
        img = Image.fromarray(grey)
        expected_grey = np.asarray(base.convert("L"))
    else:
        img = base.convert(mode)
        expected_grey = None
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = decode(encode(img, fmt), CFG, LIMIT)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    if expected_grey is not None:  # 16-bit scaled down, not clipped to white
        ref = decode(encode(Image.fromarray(expected_grey, "L"), "PNG"), CFG, LIMIT)
        assert np.abs(out.astype(int) - ref).max() <= 1
        assert out.mean() < 250


def test_palette_with_transparency_and_animated_gif_first_frame() -> None:
    frames = [Image.new("P", (300, 300), i * 40) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], transparency=0)
    out = decode(buf.getvalue(), CFG, LIMIT)
    assert out.shape == (224, 224, 3)


def test_errors_are_clear() -> None:
    with pytest.raises(InvalidInput, match="empty"):
        decode(b"", CFG, LIMIT)
    with pytest.raises(InvalidInput, match="not an image"):
        decode(b"hello, world" * 10, CFG, LIMIT)
    jpeg = encode(synthetic_photo(1), quality=90)
    with pytest.raises(InvalidInput, match="truncated or corrupt"):
        decode(jpeg[: len(jpeg) // 3], CFG, LIMIT)


def test_decompression_bomb_rejected_before_decoding() -> None:
    big = Image.new("L", (20_000, 20_000))  # 400 MP of zeros compresses to a tiny PNG
    data = encode(big, "PNG", optimize=False, compress_level=9)
    assert len(data) < 2_000_000
    with pytest.raises(PayloadTooLarge, match="pixels"):
        decode(data, CFG, LIMIT)
