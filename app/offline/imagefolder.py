"""Read a folder of image files exactly as the server would see them (app.preprocess.decode).

Used for calibration (int8 export), the `check` command and the fidelity tests. Class labels,
when wanted, come from each file's parent folder name (`DIR/<label>/*.jpg`, as torchvision's
ImageFolder lays them out).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.config import PreprocessConfig
from app.preprocess import decode

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")  # what preprocess decodes
MAX_PIXELS = 40_000_000


@dataclass
class ImageSet:
    files: list[Path]
    images: np.ndarray  # uint8 (N, crop, crop, 3)
    truth: np.ndarray | None  # class index per image, or None when the folders are not labels


def image_files(folder: Path, limit: int | None = None) -> list[Path]:
    """Every image file under a folder, recursively, in sorted order (the first `limit`)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return files[:limit] if limit else files


def load_images(
    folder: Path,
    cfg: PreprocessConfig,
    labels: list[str] | None = None,
    limit: int | None = None,
) -> ImageSet:
    """Decode every image under `folder` with the model's preprocessing.

    `truth` is set only when every file's parent folder is named after one of `labels`."""
    files = image_files(folder, limit)
    images = np.stack([decode(p.read_bytes(), cfg, MAX_PIXELS) for p in files])
    index = {name: i for i, name in enumerate(labels or [])}
    found = [index.get(p.parent.name) for p in files]
    truth = (
        np.asarray(found, dtype=np.int64) if labels and all(i is not None for i in found) else None
    )
    return ImageSet(files, images, truth)
