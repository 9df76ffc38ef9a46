"""Mutated real images through the decoder: a clear InvalidInput / PayloadTooLarge, never
another exception, never a hang. Inputs that once broke it live in tests/data/fuzz."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from app.config import PreprocessConfig
from app.errors import InvalidInput, PayloadTooLarge
from app.preprocess import decode
from tests.conftest import encode, sample_photo_path, synthetic_photo

CORPUS = Path(__file__).parent / "data" / "fuzz"
CFG = PreprocessConfig()


def seeds() -> list[bytes]:
    return [
        sample_photo_path().read_bytes(),
        encode(synthetic_photo(1, (320, 240)), "PNG"),
        encode(synthetic_photo(2, (200, 150)), "WEBP"),
        encode(synthetic_photo(3, (120, 90)), "GIF"),
        encode(synthetic_photo(4, (64, 48)), "BMP"),
        encode(synthetic_photo(6, (300, 200)).convert("P"), "PNG"),
        encode(synthetic_photo(7, (300, 200)), "JPEG", progressive=True),
    ]


def mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if not out:
            break
        op, i = rng.random(), rng.randrange(len(out))
        if op < 0.6:
            out[i] = rng.randrange(256)
        elif op < 0.8:
            del out[i : i + rng.randint(1, 64)]
        elif op < 0.9:
            out[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        else:
            del out[i:]
    return bytes(out)


def check(data: bytes) -> None:
    started = time.perf_counter()
    try:
        out = decode(data, CFG, 40_000_000)
        assert out.shape == (224, 224, 3)
    except (InvalidInput, PayloadTooLarge) as exc:
        assert exc.message
    assert time.perf_counter() - started < 5.0, "decoding hung"


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.bin")), ids=lambda p: p.name)
def test_regression_corpus(path: Path) -> None:
    with pytest.raises(InvalidInput):
        decode(path.read_bytes(), CFG, 40_000_000)


def test_mutated_images_never_escape_as_other_errors() -> None:
    rng = random.Random(20261123)
    originals = seeds()
    for _ in range(3000):
        check(mutate(rng.choice(originals), rng))
