"""Encoded images -> one uint8 NHWC batch on the model's device (imports torch: load lazily).

JPEGs are batch-decoded by nvJPEG (torchvision.io.decode_jpeg with a CUDA device), turned
upright by their EXIF orientation, then centre-cropped and resized on the device in one step:
only the crop's pixels are computed, from the source rows and columns they need (a 20000x2
JPEG never becomes a 2.5-gigapixel float image), with the weights of torchvision's antialiased
bilinear resize, and images of the same size are resized together (two batched matmuls). The
batch never visits the host. Images the CPU already decoded (EncodedImage.pixels) are copied in.

Failures stay with their image: if nvJPEG rejects a batch, it is split in halves until the
images it rejects are alone (a bad image costs about 2 log2(n) calls, not n); an image nvJPEG
rejects alone goes to the CPU decoder (app.preprocess.decode); one no decoder can read is
reported in the returned errors, its row left zero, and its neighbours are answered as usual.
Truncated JPEGs never get here: app.jpeg_structure rejects them on the CPU (400).

A fallback is never silent: each image that nvJPEG did not decode is counted by reason in a
DecodeFallbacks (the batcher turns the counts into resnet_serve_gpu_decode_fallbacks_total), and
the first failure of each reason is logged once with its exception. `decoder_failed`: nvJPEG
decoded no image of the batch (it could not start, or the device failed), so the whole batch
was decoded on the CPU; `image_rejected`: nvJPEG read its neighbours but not this image.

Streams: nvJPEG allocates its outputs on the caller's stream but writes them on a stream of
its own. Memory freed by a previous chunk (still read by kernels queued on the caller's
stream) may be handed to the next call's outputs, so before every decode call but the first
of a batch the caller's stream is synchronised.

Everything here runs on any torch device, so the tests run it on the CPU (where decode_jpeg
uses libjpeg-turbo instead of nvJPEG).
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import warnings
from collections import Counter
from collections.abc import Callable

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_jpeg

from app.config import PreprocessConfig
from app.errors import ServeError
from app.preprocess import EncodedImage, centre_crop_box, decode, resized_size

# Decoded pixels held at once: a batch is decoded in chunks of at most this many pixels, so 128
# images at the 40-megapixel request limit never ask for 15 GB of device memory at once.
DECODE_CHUNK_PIXELS = 64_000_000
# Float elements of one batched resize step (same-size images are resized together, in groups
# no larger than this: 256 MB of float32 source window).
RESIZE_GROUP_ELEMENTS = 64_000_000

log = logging.getLogger(__name__)

# torchvision 0.29 deprecates its image codecs in favour of TorchCodec (which has no batched
# nvJPEG decode yet); the call still works and is what we measured. Silence that one warning.
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


@functools.lru_cache(maxsize=512)
def aa_weights(in_size: int, out_size: int, first: int, count: int) -> tuple[np.ndarray, int]:
    """Rows first..first+count of the (out_size, in_size) matrix of torchvision's bilinear
    resize with antialias (PyTorch's _upsample_bilinear2d_aa, a port of Pillow's resampling),
    restricted to the source span they read -> (weights (count, span) float32, span start).
    Cached: photos come in few sizes. The array is read-only."""
    scale = in_size / out_size
    support = scale if scale >= 1.0 else 1.0
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    centre = scale * (np.arange(first, first + count, dtype=np.float64) + 0.5)
    lo = np.maximum((centre - support + 0.5).astype(np.int64), 0)  # int(): towards zero, as C
    hi = np.minimum((centre + support + 0.5).astype(np.int64), in_size)
    start, stop = int(lo.min()), int(hi.max())
    j = np.arange(start, stop, dtype=np.float64)[None, :]
    w = np.clip(1.0 - np.abs((j - centre[:, None] + 0.5) * inv), 0.0, None)
    w[(j < lo[:, None]) | (j >= hi[:, None])] = 0.0  # each row reads only its own span
    total = w.sum(axis=1, keepdims=True)
    w = np.divide(w, total, out=np.zeros_like(w), where=total != 0)
    matrix = w.astype(np.float32)
    matrix.flags.writeable = False
    return matrix, start


@functools.lru_cache(maxsize=128)
def _weights_on(
    device: torch.device, in_size: int, out_size: int, first: int, count: int, transpose: bool
) -> tuple[torch.Tensor, int, int]:
    """aa_weights as a tensor on the device (copied there once per size) -> (w, start, span).
    Instances on other streams share it, so its copy is complete before it is returned."""
    matrix, start = aa_weights(in_size, out_size, first, count)
    host = torch.from_numpy(matrix.T.copy() if transpose else matrix.copy())
    weights = host.to(device)
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()
    return weights, start, matrix.shape[1]


def crop_resize(imgs: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """uint8 (N, 3, H, W), images of one size -> uint8 (N, crop, crop, 3): the centre crop of
    torchvision's Resize(resize, bilinear, antialias) + CenterCrop(crop), output size and crop
    box as app.preprocess computes them, but only the crop's pixels are computed."""
    height, width = int(imgs.shape[-2]), int(imgs.shape[-1])
    new_w, new_h = resized_size(width, height, cfg.resize)
    left, top, right, bottom = centre_crop_box(new_w, new_h, cfg.crop)
    if (new_h, new_w) == (height, width):
        return imgs[:, :, top:bottom, left:right].permute(0, 2, 3, 1)
    wy, y0, hy = _weights_on(imgs.device, height, new_h, top, bottom - top, False)
    wxt, x0, wx = _weights_on(imgs.device, width, new_w, left, right - left, True)
    window = imgs[:, :, y0 : y0 + hy, x0 : x0 + wx].float()
    out = torch.matmul(torch.matmul(wy, window), wxt)  # (N, 3, crop, crop)
    return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def resize_crop(img: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """One uint8 (3, H, W) -> uint8 (crop, crop, 3)."""
    return crop_resize(img.unsqueeze(0), cfg)[0]


def _bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


class StreamGuard:
    """Called before each decode call: from the second on, waits for the caller's stream (see
    the module's note on streams). Counts calls and waits, for tests and benchmarks."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.calls = 0
        self.waits = 0

    def __call__(self) -> None:
        if self.calls:
            self.waits += 1
            if self.device.type == "cuda":
                torch.cuda.current_stream(self.device).synchronize()
        self.calls += 1


DECODER_FAILED = "decoder_failed"
IMAGE_REJECTED = "image_rejected"


class DecodeFallbacks:
    """Images GPU decoding handed to the CPU decoder, by reason, since the last take(); the
    first failure of each reason is logged once (warning) with its exception. One per runner;
    thread-safe, though a runner decodes one batch at a time."""

    def __init__(self, where: str = "") -> None:
        self.where = where
        self._counts: Counter[str] = Counter()
        self._logged: set[str] = set()
        self._lock = threading.Lock()

    def add(self, reason: str, images: int, error: Exception) -> None:
        with self._lock:
            self._counts[reason] += images
            first = reason not in self._logged
            self._logged.add(reason)
        if first:
            what = (
                "GPU JPEG decoding (nvJPEG) decoded no image of a batch"
                if reason == DECODER_FAILED
                else "nvJPEG rejected an image its neighbours decoded"
            )
            log.warning(
                "%s%s: %s: %s; such images are decoded on the CPU and counted in "
                "resnet_serve_gpu_decode_fallbacks_total{reason=%r} (logged once per reason)",
                what,
                f" ({self.where})" if self.where else "",
                type(error).__name__,
                str(error)[:300],
                reason,
            )

    def take(self) -> dict[str, int]:
        """The counts since the last call, and start again from zero."""
        with self._lock:
            counts, self._counts = dict(self._counts), Counter()
        return counts


def decode_jpegs(
    datas: list[bytes],
    device: torch.device,
    before_call: Callable[[], None] | None = None,
    fallbacks: DecodeFallbacks | None = None,
) -> list[torch.Tensor | Exception]:
    """Batch decode; a batch the decoder rejects is split in halves, so one bad file fails
    only itself and costs O(log n) further calls. The images it could not decode are counted in
    `fallbacks` (the caller decodes them on the CPU)."""
    guard = before_call or StreamGuard(device)
    decoded = _decode_split([_bytes_tensor(d) for d in datas], device, guard)
    failed = [x for x in decoded if isinstance(x, Exception)]
    if failed and fallbacks is not None:
        # one image alone is not evidence against the decoder: count it as that image's
        reason = DECODER_FAILED if len(failed) == len(decoded) > 1 else IMAGE_REJECTED
        fallbacks.add(reason, len(failed), failed[0])
    return decoded


def _decode_split(
    tensors: list[torch.Tensor], device: torch.device, before_call: Callable[[], None]
) -> list[torch.Tensor | Exception]:
    if not tensors:
        return []
    before_call()
    try:
        return list(decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device))
    except Exception as exc:
        if len(tensors) == 1:
            return [exc]
    mid = len(tensors) // 2
    return _decode_split(tensors[:mid], device, before_call) + _decode_split(
        tensors[mid:], device, before_call
    )


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


def _resize_into(
    out: torch.Tensor, rows: list[int], imgs: list[torch.Tensor], cfg: PreprocessConfig
) -> None:
    """Crop + resize upright images into their rows of `out`, same-size images together."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, img in enumerate(imgs):
        groups.setdefault(tuple(img.shape), []).append(k)
    for shape, members in groups.items():
        per_image = max(1, shape[0] * shape[1] * shape[2])
        step = max(1, RESIZE_GROUP_ELEMENTS // per_image)
        for s in range(0, len(members), step):
            part = members[s : s + step]
            stacked = (
                imgs[part[0]].unsqueeze(0)
                if len(part) == 1
                else torch.stack([imgs[k] for k in part])
            )
            index = torch.tensor([rows[k] for k in part], device=out.device)
            out[index] = crop_resize(stacked, cfg)


def decode_batch(
    images: list[EncodedImage],
    cfg: PreprocessConfig,
    device: torch.device | str,
    pad_to: int,
    chunk_pixels: int | None = None,
    guard: StreamGuard | None = None,
    fallbacks: DecodeFallbacks | None = None,
) -> tuple[torch.Tensor, dict[int, Exception]]:
    """-> (uint8 (pad_to, crop, crop, 3) on `device`, {index: error} of images none could read).
    Images nvJPEG could not decode are counted in `fallbacks` by reason (module docstring).

    Run it inside the caller's CUDA stream: every kernel and copy here goes to that stream."""
    device = torch.device(device)
    guard = guard or StreamGuard(device)
    out = torch.zeros((pad_to, cfg.crop, cfg.crop, 3), dtype=torch.uint8, device=device)
    errors: dict[int, Exception] = {}
    cpu_rows: list[int] = []
    cpu_pixels: list[np.ndarray] = []
    for chunk in _chunks(images, chunk_pixels):
        decoded = decode_jpegs([images[i].data or b"" for i in chunk], device, guard, fallbacks)
        good_rows: list[int] = []
        upright: list[torch.Tensor] = []
        for i, img in zip(chunk, decoded, strict=True):
            if isinstance(img, torch.Tensor) and img.ndim == 3 and img.shape[0] == 3:
                good_rows.append(i)
                upright.append(orient(img, images[i].orientation))
                continue
            try:  # the one image nvJPEG could not read: the CPU decoder, as for other formats
                cpu_pixels.append(decode(images[i].data or b"", cfg, sys.maxsize))
                cpu_rows.append(i)
            except ServeError as exc:
                errors[i] = exc
        _resize_into(out, good_rows, upright, cfg)
        del decoded, upright
    for i, im in enumerate(images):
        if im.pixels is not None:
            cpu_rows.append(i)
            cpu_pixels.append(im.pixels)
    if cpu_rows:
        host = torch.from_numpy(np.stack(cpu_pixels))
        out[torch.tensor(cpu_rows, device=device)] = host.to(device, non_blocking=True)
    return out, errors
