"""The GPU check's JPEGs, made once before its timed steps, on every core.

    python benchmarks/gpu_images.py DIR            # DIR/small: 64 photos of 500x375,
                                                   # DIR/race: 16 phone photos of 4000x3000
    python benchmarks/gpu_images.py DIR --small    # tiny sizes, for the dry run

`small` are the decode and pipeline steps' images (benchmarks/gpu_pipeline.py's synthetic
photos, ImageNet's typical size). `race` feeds the multi-chunk stream-race check: phone-size
photos, several 64-megapixel decode chunks' worth. Drawing them at full size (blur and noise
over 12 Mpx) took about 3 s each on one core; here each is drawn at a quarter of its size,
upscaled, given full-size sensor noise (so its entropy-coded data is a photo's, not a smooth
gradient's), and the images are made in parallel processes.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def small_photo(seed: int) -> bytes:
    from gpu_pipeline import synthetic_jpegs

    return synthetic_jpegs(1, first_seed=seed)[0]


def phone_photo(seed: int, width: int, height: int) -> bytes:
    from gpu_pipeline import synthetic_jpegs
    from PIL import Image

    base = Image.open(io.BytesIO(synthetic_jpegs(1, (width // 4, height // 4), first_seed=seed)[0]))
    big = np.asarray(base.resize((width, height), Image.Resampling.BILINEAR), dtype=np.int16)
    noise = np.random.default_rng(seed).integers(-10, 11, big.shape, dtype=np.int16)
    buf = io.BytesIO()
    Image.fromarray(np.clip(big + noise, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _write(job: tuple[str, int, int, int, Path]) -> int:
    kind, seed, width, height, path = job
    data = small_photo(seed) if kind == "small" else phone_photo(seed, width, height)
    path.write_bytes(data)
    return len(data)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("out", type=Path)
    p.add_argument("--small-count", type=int, default=64)
    p.add_argument("--race-count", type=int, default=16)
    p.add_argument("--race-size", type=int, nargs=2, default=[4000, 3000], metavar=("W", "H"))
    p.add_argument("--small", action="store_true", help="tiny sizes (the dry run)")
    args = p.parse_args(argv)
    if args.small:
        args.small_count, args.race_count, args.race_size = 8, 6, [320, 240]
    start = time.perf_counter()
    jobs: list[tuple[str, int, int, int, Path]] = []
    for kind, count, (w, h) in (
        ("small", args.small_count, (500, 375)),
        ("race", args.race_count, tuple(args.race_size)),
    ):
        folder = args.out / kind
        folder.mkdir(parents=True, exist_ok=True)
        jobs += [(kind, s, w, h, folder / f"{kind}_{s:03d}.jpg") for s in range(count)]
    # the biggest first, so no core is left with one late phone photo
    jobs.sort(key=lambda j: -j[2] * j[3])
    with ProcessPoolExecutor(max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        total = sum(pool.map(_write, jobs))
    print(
        f"gpu_images: {args.small_count} small + {args.race_count} race JPEGs "
        f"({args.race_size[0]}x{args.race_size[1]}), {total / 1e6:.1f} MB, "
        f"{time.perf_counter() - start:.1f} s, in {args.out}"
    )
    return 0


def load_folder(folder: Path) -> list[bytes]:
    """The JPEGs of a folder this script made, in name order."""
    files = sorted(folder.glob("*.jpg"))
    if not files:
        raise SystemExit(f"no .jpg files in {folder}: run benchmarks/gpu_images.py first")
    return [f.read_bytes() for f in files]


if __name__ == "__main__":
    sys.exit(main())
