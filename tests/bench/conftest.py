"""Fixtures of the bench tests: a folder of real JPEG files."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def image_dir(jpegs: list[bytes], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bench-images")
    for i, data in enumerate(jpegs):
        (folder / f"image_{i}.jpg").write_bytes(data)
    return folder
