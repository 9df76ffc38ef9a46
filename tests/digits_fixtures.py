"""Fixtures of the trained digits model (registered in conftest.py): its images and its export
in every precision. Session-scoped: written and exported once (about 15 s on 2 cores)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def digits_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The training and held-out splits as JPEG files, DIR/<digit>/*.jpg."""
    from app.offline.recipes.digits import write_images

    root = tmp_path_factory.mktemp("digits-images")
    for split in ("train", "test"):
        write_images(root / split, split)
    return {"train": root / "train", "test": root / "test"}


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory, digits_images: dict[str, Path]) -> Path:
    """The committed digits model exported as eager, TorchScript, ONNX, int8, fp16 and bf16."""
    from app.offline.recipes import digits

    out = tmp_path_factory.mktemp("digits-models") / "digits"
    digits.export(out, ["int8", "fp16", "bf16"], calibration_images=digits_images["train"])
    return out
