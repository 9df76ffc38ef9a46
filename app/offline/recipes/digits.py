"""A really trained ResNet on scikit-learn's handwritten digits, seen exactly as the server sees it.

The 1,797 8x8 scans of scikit-learn's `load_digits` are drawn as dark ink on white paper,
upscaled to 80x80 and written as real JPEG files, one folder per class (`DIR/<digit>/*.jpg`).
Training and every check read those files back through `app.preprocess.decode` with the
model's own PreprocessConfig (resize 64, centre crop 56), and the network is the served
UInt8Classifier (uint8 NHWC in, normalisation inside), so the model is trained on exactly
the arrays a request would hand it.

    python -m app.offline.recipes.digits images --split test --out /tmp/digits-test
    python -m app.offline.recipes.digits train --out models/recipes/digits/resnet-mini-digits.pt

The split is stratified and fixed (scikit-learn's train_test_split, random_state 0): 1,257
training images, 540 held out. scikit-learn is a dev dependency; it is imported only here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from app.config import BatchingConfig, ModelConfig, PreprocessConfig
from app.offline.agreement import accuracy
from app.offline.imagefolder import load_images

if TYPE_CHECKING:
    import torch  # imported at run time inside the functions that train

ARCH = "resnet-mini"
# Trained by `python -m app.offline.recipes.digits train` (30 epochs, seed 0) and committed: 1.3 MB.
WEIGHTS = (
    Path(__file__).resolve().parents[3] / "models" / "recipes" / "digits" / "resnet-mini-digits.pt"
)
LABELS = [str(d) for d in range(10)]
PREPROCESS = PreprocessConfig(resize=64, crop=56)
IMAGE_SIDE = 80
JPEG_QUALITY = 90
SPLIT_SEED = 0
TEST_FRACTION = 0.3


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images 8x8 in 0..16, labels) of split 'train', 'test' or 'all'."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:  # pragma: no cover - dev dependency
        raise SystemExit(
            "the digits recipe needs scikit-learn: pip install 'resnet-serve[dev]'"
        ) from None
    digits = load_digits()
    images, labels = digits.images, digits.target
    if split == "all":
        return images, labels
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels
    )
    if split == "train":
        return train_x, train_y
    if split == "test":
        return test_x, test_y
    raise ValueError(f"split must be train, test or all, not {split!r}")


def render(scan: np.ndarray) -> Image.Image:
    """One 8x8 scan (0..16) -> an 80x80 greyscale picture: dark ink on white paper."""
    paper = 255.0 - scan.astype(np.float64) * (255.0 / 16.0)
    small = Image.fromarray(np.clip(np.rint(paper), 0, 255).astype(np.uint8), "L")
    return small.resize((IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.BICUBIC)


def write_images(out: Path, split: str) -> list[tuple[Path, int]]:
    """Write a split as JPEG files, out/<digit>/<split>-<n>.jpg. Returns (path, label) pairs."""
    images, labels = load_split(split)
    written: list[tuple[Path, int]] = []
    for n, (scan, label) in enumerate(zip(images, labels, strict=True)):
        folder = out / LABELS[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{split}-{n:04d}.jpg"
        render(scan).save(path, "JPEG", quality=JPEG_QUALITY)
        written.append((path, int(label)))
    return written


def train(train_dir: Path, epochs: int = 30, seed: int = 0, log: bool = True) -> dict[str, object]:
    """Train resnet-mini on the JPEGs of train_dir (as decoded by the server). Returns its
    state_dict. Deterministic for a seed on one machine (torch's CPU kernels)."""
    import torch

    from app.backends.torch.models import build_arch, wrap

    torch.manual_seed(seed)
    data = load_images(train_dir, PREPROCESS, LABELS)
    assert data.truth is not None, f"{train_dir} must hold one folder per digit"
    x, y = data.images, data.truth
    model = build_arch(ARCH, len(LABELS))
    net = wrap(model, PREPROCESS.mean, PREPROCESS.std, "cpu", "fp32", channels_last=False).train()
    images, targets = torch.from_numpy(x), torch.from_numpy(y)
    optimiser = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=5e-4)
    steps_per_epoch = (len(images) + 63) // 64
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=3e-3, total_steps=epochs * steps_per_epoch
    )
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        total = 0.0
        for start in range(0, len(images), 64):
            idx = order[start : start + 64]
            batch = _shift(images[idx], generator)
            loss = torch.nn.functional.cross_entropy(net(batch), targets[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(idx)
        if log:
            print(
                f"epoch {epoch + 1:2d}/{epochs}  loss {total / len(images):.4f}  "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
    return {k: v.detach().clone() for k, v in model.eval().state_dict().items()}


def _shift(batch: torch.Tensor, generator: torch.Generator, most: int = 4) -> torch.Tensor:
    """Augmentation: move each image by up to `most` pixels, filling with white paper."""
    import torch

    n, h, w, _ = batch.shape
    padded = torch.nn.functional.pad(
        batch.permute(0, 3, 1, 2), (most, most, most, most), value=255
    ).permute(0, 2, 3, 1)
    dy = torch.randint(0, 2 * most + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * most + 1, (n,), generator=generator)
    return torch.stack([padded[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def export(
    out: Path,
    precisions: list[str] | None = None,
    calibration_images: Path | None = None,
    formats: list[str] | None = None,
    name: str | None = None,
    weights: Path | None = None,
    batching: BatchingConfig | None = None,
) -> ModelConfig:
    """Export the committed digits model. int8 is calibrated on calibration_images, by
    default the training split (written to a temporary folder)."""
    import tempfile

    from app.offline.export import export_model

    weights = weights or WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(
            f"{weights} is missing: python -m app.offline.recipes.digits train --out {weights}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        if precisions and "int8" in precisions and calibration_images is None:
            calibration_images = Path(tmp) / "train"
            write_images(calibration_images, "train")
        return export_model(
            ARCH,
            str(weights),
            formats or ["eager", "torchscript", "onnx"],
            out,
            name=name,
            labels=LABELS,
            preprocess=PREPROCESS,
            batching=batching,
            precisions=precisions,
            calibration_images=calibration_images,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.offline.recipes.digits",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    images = sub.add_parser("images", help="write a split as JPEG files, one folder per digit")
    images.add_argument("--split", default="test", choices=("train", "test", "all"))
    images.add_argument("--out", type=Path, required=True)
    fit = sub.add_parser("train", help="train resnet-mini on the training split; save a state_dict")
    fit.add_argument("--out", type=Path, required=True)
    fit.add_argument("--epochs", type=int, default=30)
    fit.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.command == "images":
        written = write_images(args.out, args.split)
        print(f"wrote {len(written)} {args.split} images under {args.out}")
        return 0

    import tempfile

    import torch

    from app.backends.torch.models import build_arch, wrap

    with tempfile.TemporaryDirectory() as tmp:
        write_images(Path(tmp) / "train", "train")
        write_images(Path(tmp) / "test", "test")
        state = train(Path(tmp) / "train", args.epochs, args.seed)
        model = build_arch(ARCH, len(LABELS))
        model.load_state_dict(state)
        net = wrap(
            model.eval(), PREPROCESS.mean, PREPROCESS.std, "cpu", "fp32", channels_last=False
        )
        held_out = load_images(Path(tmp) / "test", PREPROCESS, LABELS)
        x, y = held_out.images, held_out.truth
        assert y is not None
        with torch.inference_mode():
            acc = accuracy(net(torch.from_numpy(x)).numpy(), y)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, args.out)
    print(
        f"held-out accuracy {acc:.4f} on {len(y)} images; wrote {args.out} "
        f"({args.out.stat().st_size / 1e6:.2f} MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
