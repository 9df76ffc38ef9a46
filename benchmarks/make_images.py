"""Write a folder of JPEG files to benchmark with.

No image data set can be downloaded here, so the folder holds the one real photograph that
ships with matplotlib (grace_hopper.jpg, 512x600) and photo-like synthetic images (gradients,
shapes and sensor noise, deterministic per seed) at ImageNet's typical sizes, quality 90: their
decode cost is that of real photos of the same size. Pass --from DIR to copy real JPEGs instead.

    python benchmarks/make_images.py bench-images [--count 32]
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

# ImageNet validation images are mostly 500x375 / 375x500 / 500x333, a few larger.
SIZES = [(500, 375), (375, 500), (500, 333), (640, 480), (500, 400), (800, 600), (333, 500)]


def synthetic_photo(seed: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        fx, fy = rng.uniform(0.002, 0.03, 2)
        img[..., c] = 127 + 100 * np.sin(x * fx + y * fy + rng.uniform(0, 6.28))
    for _ in range(8):
        cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.integers(20, 120)
        img[(x - cx) ** 2 + (y - cy) ** 2 < r**2] = rng.integers(0, 256, 3)
    img += rng.normal(0, 6, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("out", type=Path)
    p.add_argument("--count", type=int, default=32, help="synthetic images besides the photo")
    p.add_argument("--from", dest="source", type=Path, help="copy the JPEGs of this folder instead")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.source:
        files = [f for f in sorted(args.source.iterdir()) if f.suffix.lower() in (".jpg", ".jpeg")]
        for f in files:
            shutil.copy(f, args.out / f.name)
        print(f"copied {len(files)} JPEGs to {args.out}")
        return 0 if files else 1
    try:
        import matplotlib

        photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        shutil.copy(photo, args.out / "grace_hopper.jpg")
    except (ImportError, OSError) as exc:
        print(f"no matplotlib sample photo ({exc}); synthetic images only", file=sys.stderr)
    for i in range(args.count):
        buf = io.BytesIO()
        synthetic_photo(i, SIZES[i % len(SIZES)]).save(buf, "JPEG", quality=90)
        (args.out / f"synthetic_{i:03d}.jpg").write_bytes(buf.getvalue())
    print(f"wrote {args.count} synthetic JPEGs (+ the sample photo) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
