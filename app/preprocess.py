"""Bytes of ONE image -> uint8 HxWx3 array, as torchvision's Resize + CenterCrop would make it.

Runs per request, before batching, in a thread pool (Pillow releases the GIL while it decodes
and resizes). Anything wrong with the image raises InvalidInput or PayloadTooLarge here, so a
bad image never reaches a batch it would share with other clients.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from app.config import PreprocessConfig
from app.decode_limits import DecodeLimits, check, check_structure, exif_orientation, upright
from app.errors import InvalidInput, PayloadTooLarge
from app.jpeg_structure import jpeg_structure_error

Limits = int | DecodeLimits  # an int: only that pixel limit (offline tools, benchmarks)

# Decoders we accept; Pillow is never asked to try the others (smaller attack surface).
# TIFF is left out on purpose: fuzzing found crafted TIFFs that crash Pillow's loader
# (OverflowError) or take seconds (tests/data/fuzz), and cameras and browsers send JPEG/PNG/WebP.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
# Decode at reduced size (JPEG DCT scaling) only when the image is at least this many times
# larger than the resize target: the result then stays within a grey level of a full decode.
DRAFT_FACTOR = 2

Image.MAX_IMAGE_PIXELS = None  # we check the pixel count ourselves, before decoding


def resized_size(width: int, height: int, short: int) -> tuple[int, int]:
    """torchvision's Resize(short) output size for a PIL image (int truncation, as it does)."""
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def centre_crop_box(width: int, height: int, crop: int) -> tuple[int, int, int, int]:
    """torchvision's CenterCrop box (it rounds half to even, as Python's round does)."""
    top = int(round((height - crop) / 2.0))
    left = int(round((width - crop) / 2.0))
    return left, top, left + crop, top + crop


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: Pillow's convert("RGB") would clip to 255; scale to 8 bits instead.
        arr = np.asarray(img, dtype=np.uint32)
        shift = 8 if arr.max(initial=0) <= 0xFFFF else 24
        return Image.fromarray((arr >> shift).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        arr = np.clip(np.asarray(img, dtype=np.float32), 0.0, 255.0).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    # CMYK (Pillow undoes Adobe's inversion), L, LA, RGBA, P, YCbCr: alpha is dropped, as
    # torchvision's reference loader (`.convert("RGB")`) does.
    return img.convert("RGB")


def _limits(limits: Limits) -> DecodeLimits:
    return DecodeLimits.unlimited(limits) if isinstance(limits, int) else limits


def open_checked(data: bytes, limits: Limits) -> tuple[Image.Image, float]:
    """The header read and every per-format limit checked (app/decode_limits.py), no pixel
    decoded: the image and its estimated decode cost."""
    bounds = _limits(limits)
    check_structure(data, bounds)
    img = _open(data, bounds.max_pixels)
    return img, check(img, data, bounds)


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Read the header only (no pixel is decoded): format, size, pixel limit."""
    if not data:
        raise InvalidInput("empty image: the body or part holds no bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise InvalidInput(
            f"not an image Pillow can read; send one of {', '.join(FORMATS)}"
        ) from None
    except Exception as exc:
        raise InvalidInput(f"image header is corrupt: {type(exc).__name__}: {exc}") from None

    width, height = img.size
    if width < 1 or height < 1:
        raise InvalidInput(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    return img


def decode(data: bytes, cfg: PreprocessConfig, max_pixels: Limits) -> np.ndarray:
    """Decode, upright (EXIF), RGB, resize the shorter side, centre-crop. uint8 (crop, crop, 3)."""
    img, _ = open_checked(data, max_pixels)
    return decode_opened(img, cfg)


def decode_opened(img: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """decode() of an image open_checked() has read."""
    width, height = img.size
    try:
        if (
            cfg.use_draft
            and img.format == "JPEG"
            and min(width, height) >= DRAFT_FACTOR * cfg.resize
        ):
            img.draft("RGB", (DRAFT_FACTOR * cfg.resize, DRAFT_FACTOR * cfg.resize))
        img.seek(0)  # animated images: the first frame
        img = upright(img, exif_orientation(img))  # bounded EXIF parsing (decode_limits)
        img = _to_rgb(img)
        size = resized_size(*img.size, cfg.resize)
        box = centre_crop_box(*size, cfg.crop)
        if cfg.use_draft:
            # only the crop's pixels: the same filter centres and support as resizing the
            # whole image and cropping, up to rounding (within a grey level), in about two
            # thirds of the time (a 500x375 photo: 3.1-3.7 ms against 3.9-5.0 per decode)
            sx, sy = img.size[0] / size[0], img.size[1] / size[1]
            source = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
            img = img.resize((cfg.crop, cfg.crop), Image.Resampling.BILINEAR, box=source)
        else:  # exactly torchvision's Resize then CenterCrop
            img = img.resize(size, Image.Resampling.BILINEAR).crop(box)
        return np.asarray(img, dtype=np.uint8)
    except MemoryError:
        raise PayloadTooLarge("image needs more memory to decode than the server has") from None
    except Exception as exc:
        raise InvalidInput(
            f"image data is truncated or corrupt: {type(exc).__name__}: {exc}"
        ) from None


# ------------------------------------------------------- GPU decoding (input.decode "gpu")
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class EncodedImage:
    """One image as the batcher carries it for a model that decodes on its GPU: either JPEG
    bytes the backend decodes (and turns upright by `orientation`, EXIF 1-8), or pixels the
    CPU already decoded (formats or JPEG flavours nvJPEG is not given)."""

    data: bytes | None = None
    orientation: int = 1
    pixels: np.ndarray | None = None  # uint8 (crop, crop, 3)
    width: int = 0  # as stored, before orientation
    height: int = 0


# What the batcher carries for one request: decoded pixels, or images still to decode.
Batch = np.ndarray | list[EncodedImage]


def gpu_decodable(img: Image.Image) -> bool:
    """Baseline 3-component JPEGs go to nvJPEG. Progressive, CMYK/YCCK and greyscale JPEGs,
    and every other format, are decoded on the CPU: they are rare, and keeping nvJPEG to
    the one flavour it is fastest at keeps its failures rare too."""
    return (
        img.format == "JPEG"
        and img.mode == "RGB"
        and not img.info.get("progressive")
        and not img.info.get("progression")
    )


def inspect(data: bytes, cfg: PreprocessConfig, max_pixels: Limits) -> EncodedImage:
    """For a model that decodes on the GPU: check the header on the CPU (the same 400/413
    errors as decode()), read the EXIF orientation, and keep the bytes; images nvJPEG is
    not given are decoded here, on the CPU, as decode() does."""
    img, _ = open_checked(data, max_pixels)
    if not gpu_decodable(img):
        return EncodedImage(pixels=decode_opened(img, cfg))
    broken = jpeg_structure_error(data)  # nvJPEG would decode a cut file without an error
    if broken is not None:
        raise InvalidInput(f"image data is truncated or corrupt: {broken}")
    try:
        orientation = exif_orientation(img)
    except Exception:
        # raise on it too, so let decode() give the same answer as the CPU path
        return EncodedImage(pixels=decode_opened(img, cfg))
    return EncodedImage(data=data, orientation=orientation, width=img.width, height=img.height)
