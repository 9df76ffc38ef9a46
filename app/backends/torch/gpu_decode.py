"""Encoded images -> one uint8 NHWC batch on the model's device (imports torch: load lazily).

JPEGs are batch-decoded by nvJPEG (torchvision.io.decode_jpeg with a CUDA device), turned
upright by their EXIF orientation, resized (shorter side, bilinear with antialias: torchvision's
own resize) and centre-cropped on the device; the batch never visits the host. Images the CPU
already decoded (EncodedImage.pixels) are copied in beside them.

Failures stay with their image: if nvJPEG rejects the batch, each JPEG is retried alone on the
device, then on the CPU (app.preprocess.decode); an image no decoder can read is reported in
the returned errors and its row left zero, and its neighbours are answered as usual.

Everything here runs on any torch device, so the tests run it on the CPU (where decode_jpeg
uses libjpeg-turbo instead of nvJPEG).
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from app.config import PreprocessConfig
from app.errors import ServeError
from app.preprocess import EncodedImage, centre_crop_box, decode, resized_size

# torchvision 0.29 deprecates its image codecs in favour of TorchCodec (which has no batched
# nvJPEG decode yet); the call still works and is what we measured. Silence that one warning.
# Decoded pixels held at once: a batch is decoded in chunks of at most this many pixels, so 128
# images at the 40-megapixel request limit never ask for 15 GB of device memory at once.
DECODE_CHUNK_PIXELS = 64_000_000

warnings.filterwarnings(
    "ignore",
    message=r"The image decoding and encoding capabilities of TorchVision",
    category=DeprecationWarning,
)


def orient(img: torch.Tensor, orientation: int) -> torch.Tensor:
    """(C, H, W) as stored -> upright, as PIL.ImageOps.exif_transpose does (EXIF 1-8)."""
    h, w = -2, -1
    if orientation == 2:
        return img.flip(w)
    if orientation == 3:
        return img.flip(h, w)
    if orientation == 4:
        return img.flip(h)
    if orientation == 5:  # transpose
        return img.transpose(h, w)
    if orientation == 6:  # PIL ROTATE_270: a quarter turn clockwise
        return torch.rot90(img, -1, (h, w))
    if orientation == 7:  # transverse
        return torch.rot90(img.transpose(h, w), 2, (h, w))
    if orientation == 8:  # PIL ROTATE_90: a quarter turn anticlockwise
        return torch.rot90(img, 1, (h, w))
    return img


def resize_crop(img: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """uint8 (3, H, W) -> uint8 (crop, crop, 3): torchvision's Resize(resize) + CenterCrop(crop),
    with the output size and crop box computed exactly as app.preprocess does."""
    height, width = int(img.shape[-2]), int(img.shape[-1])
    new_w, new_h = resized_size(width, height, cfg.resize)
    if (new_h, new_w) != (height, width):
        img = F.resize(
            img, [new_h, new_w], interpolation=InterpolationMode.BILINEAR, antialias=True
        )
    left, top, right, bottom = centre_crop_box(new_w, new_h, cfg.crop)
    return img[:, top:bottom, left:right].permute(1, 2, 0)


def _bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def decode_jpegs(datas: list[bytes], device: torch.device) -> list[torch.Tensor | Exception]:
    """Batch decode; if the batch raises, each image alone, so one bad file fails only itself."""
    if not datas:
        return []
    tensors = [_bytes_tensor(d) for d in datas]
    try:
        out = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
        return list(out)
    except Exception:
        pass
    results: list[torch.Tensor | Exception] = []
    for t in tensors:
        try:
            results.append(decode_jpeg([t], mode=ImageReadMode.RGB, device=device)[0])
        except Exception as exc:
            results.append(exc)
    return results


def _chunks(images: list[EncodedImage], budget: int | None = None) -> list[list[int]]:
    """Rows of the JPEGs to decode, grouped so each group holds at most `budget` pixels (an
    image larger than the budget alone)."""
    budget = DECODE_CHUNK_PIXELS if budget is None else budget
    chunks: list[list[int]] = []
    current: list[int] = []
    held = 0
    for i, img in enumerate(images):
        if img.data is None:
            continue
        pixels = max(1, img.width * img.height)
        if current and held + pixels > budget:
            chunks.append(current)
            current, held = [], 0
        current.append(i)
        held += pixels
    if current:
        chunks.append(current)
    return chunks


def decode_batch(
    images: list[EncodedImage], cfg: PreprocessConfig, device: torch.device | str, pad_to: int
) -> tuple[torch.Tensor, dict[int, Exception]]:
    """-> (uint8 (pad_to, crop, crop, 3) on `device`, {index: error} of images none could read).

    Run it inside the caller's CUDA stream: every kernel and copy here goes to that stream."""
    device = torch.device(device)
    out = torch.zeros((pad_to, cfg.crop, cfg.crop, 3), dtype=torch.uint8, device=device)
    errors: dict[int, Exception] = {}
    cpu_rows: list[int] = []
    cpu_pixels: list[np.ndarray] = []
    for rows in _chunks(images):
        # _chunks keeps only the rows that hold data: `or b""` never applies
        decoded = decode_jpegs([images[i].data or b"" for i in rows], device)
        for i, img in zip(rows, decoded, strict=True):
            if isinstance(img, torch.Tensor) and img.ndim == 3 and img.shape[0] == 3:
                out[i] = resize_crop(orient(img, images[i].orientation), cfg)
                continue
            try:  # the one image nvJPEG could not read: the CPU decoder, as for other formats
                cpu_pixels.append(decode(images[i].data or b"", cfg, sys.maxsize))
                cpu_rows.append(i)
            except ServeError as exc:
                errors[i] = exc
        del decoded
    for i, im in enumerate(images):
        if im.pixels is not None:
            cpu_rows.append(i)
            cpu_pixels.append(im.pixels)
    if cpu_rows:
        host = torch.from_numpy(np.stack(cpu_pixels))
        out[torch.tensor(cpu_rows, device=device)] = host.to(device, non_blocking=True)
    return out, errors
