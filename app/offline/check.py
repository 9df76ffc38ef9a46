"""`resnet-serve check models/NAME --images DIR`: does every backend and precision of a model
give the answers the trained model gives?

Each backend runs in-process through app.backends.loaded_backend, on the images of DIR decoded
by the server's own preprocessing, and is compared with eager fp32 on the CPU (the trained
model itself). Per backend and precision it reports:

- top-1 agreement: share of images whose best class is the reference's;
- top-5 agreement: share of images whose top-5 classes (as a set) are the reference's;
- max relative logit error: max |logits - reference| / max |reference| over all images;
- accuracy, when DIR holds one folder per class named after the model's labels.

Thresholds (a miss exits 1): fp32 max relative error < 1e-4; fp16 and bf16 top-1 agreement
>= 99.5 %; int8 top-1 agreement >= 99 %. Rows that cannot run here (fp16 without a GPU, bf16
on a CPU without bf16 instructions, a file not exported) are printed as skipped, with why.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.backends import REGISTRY, Candidate, backend_class, loaded_backend, register_plugins
from app.config import ModelConfig, Settings, read_model_config
from app.errors import ServeError
from app.offline.agreement import accuracy, compare
from app.offline.imagefolder import ImageSet, load_images

FP32_MAX_REL_ERROR = 1e-4
MIN_TOP1 = {"fp16": 0.995, "bf16": 0.995, "int8": 0.99}
REFERENCE = ("eager", "fp32")


@dataclass
class Row:
    backend: str
    precision: str
    provider: str = ""
    top1: float | None = None
    top5: float | None = None
    rel_error: float | None = None
    accuracy: float | None = None
    skipped: str | None = None
    error: str | None = None

    @property
    def threshold(self) -> str:
        if self.precision == "fp32":
            return f"rel err < {FP32_MAX_REL_ERROR:.0e}"
        return f"top-1 >= {MIN_TOP1[self.precision]:.1%}"

    @property
    def passed(self) -> bool:
        if self.skipped:
            return True
        if self.error or self.top1 is None or self.rel_error is None:
            return False
        if self.precision == "fp32":
            return self.rel_error < FP32_MAX_REL_ERROR
        return self.top1 >= MIN_TOP1[self.precision]

    @property
    def result(self) -> str:
        if self.skipped:
            return f"skipped: {self.skipped}"
        if self.error:
            return f"FAIL: {self.error}"
        return "pass" if self.passed else "FAIL"


def candidates(cfg: ModelConfig, device: str) -> list[tuple[str, Candidate]]:
    """Every backend and precision the model's files allow, each with why it cannot run here:
    each registered backend says which of its configurations fit the model."""
    return [
        (name, cand)
        for name in REGISTRY
        for cand in backend_class(name).check_candidates(cfg, device)
    ]


def run_backend(cfg: ModelConfig, images: np.ndarray, batch_size: int) -> tuple[np.ndarray, str]:
    """Logits of every image through one backend (loaded, run in batches, closed)."""
    with loaded_backend(cfg) as backend:
        provider = (backend.info().providers or ["?"])[0]
        out = [backend.infer(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float32), provider


def check_model(
    model_dir: Path,
    images_dir: Path,
    device: str | None = None,
    batch_size: int = 32,
    limit: int | None = None,
) -> tuple[ModelConfig, ImageSet, list[Row], float | None]:
    """Run every candidate; return the config, the images, the rows and the reference accuracy."""
    base = read_model_config(model_dir)
    device = device or base.device
    if "eager" not in base.files:
        raise ValueError(
            f"{model_dir} has no eager state_dict: check compares every backend "
            "with eager fp32, so export the model with the eager format too"
        )
    data = load_images(images_dir, base.input, base.labels or None, limit=limit)

    def variant(
        backend: str, precision: str, dev: str, extra: dict[str, Any] | None = None
    ) -> ModelConfig:
        overrides: dict[str, Any] = {
            "backend": backend,
            "precision": precision,
            "device": dev,
            "batching": {
                **base.batching.model_dump(),
                "max_batch_size": batch_size,
                "instances": 1,
            },
        }
        overrides.update(extra or {})
        return base.variant(f"{base.name}-check", **overrides)

    reference, _ = run_backend(variant(*REFERENCE, "cpu"), data.images, batch_size)
    ref_acc = _accuracy(reference, data.truth)
    rows: list[Row] = []
    for backend, cand in candidates(base, device):
        row = Row(backend, cand.precision, provider=cand.asked)
        rows.append(row)
        if cand.skip:
            row.skipped = cand.skip
            continue
        try:
            logits, row.provider = run_backend(
                variant(backend, cand.precision, device, cand.overrides),
                data.images,
                batch_size,
            )
            if logits.shape != reference.shape:
                raise ValueError(f"logits of shape {logits.shape}, eager's are {reference.shape}")
        except Exception as exc:
            row.error = f"{type(exc).__name__}: {exc}"
            continue
        row.top1, row.top5, row.rel_error = compare(reference, logits)
        row.accuracy = _accuracy(logits, data.truth)
    return base, data, rows, ref_acc


def _accuracy(logits: np.ndarray, truth: np.ndarray | None) -> float | None:
    return None if truth is None else accuracy(logits, truth)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def format_table(rows: list[Row]) -> str:
    header = (
        "backend",
        "precision",
        "provider",
        "top-1 agree",
        "top-5 agree",
        "max rel err",
        "accuracy",
        "threshold",
        "result",
    )
    lines = [header]
    for r in rows:
        lines.append(
            (
                r.backend,
                r.precision,
                r.provider or "-",
                _pct(r.top1),
                _pct(r.top5),
                "-" if r.rel_error is None else f"{r.rel_error:.2e}",
                _pct(r.accuracy),
                r.threshold,
                r.result,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    widths.append(len(header[-1]))  # the result column runs long: not padded
    out = []
    for n, line in enumerate(lines):
        cells = [c.ljust(w) for c, w in zip(line[:-1], widths[:-1], strict=True)] + [line[-1]]
        out.append("| " + " | ".join(cells) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.ERROR)
    try:
        register_plugins(Settings().backend_plugins)  # RESNET_SERVE_BACKEND_PLUGINS, as serve
        cfg, data, rows, ref_acc = check_model(
            Path(args.model), Path(args.images), args.device, args.batch_size, args.limit
        )
    # ServeError: a bad image file; ImportError: a backend plugin that does not import
    except (FileNotFoundError, ValueError, ImportError, ServeError) as exc:
        print(f"check failed: {exc}", file=sys.stderr)
        return 2
    labelled = "labelled by folder" if data.truth is not None else "no labels"
    print(
        f"model {cfg.name} ({cfg.arch}, {cfg.weights}); {len(data.files)} images from "
        f"{args.images} ({labelled}), input {cfg.input.resize}/{cfg.input.crop}"
    )
    print(
        "reference: eager fp32 on cpu"
        + (f", accuracy {ref_acc:.2%}" if ref_acc is not None else "")
    )
    print(format_table(rows))
    failed = [r for r in rows if not r.passed]
    ran = sum(1 for r in rows if not r.skipped)
    print(f"{ran} run, {len(rows) - ran} skipped, {len(failed)} failed")
    return 1 if failed else 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = sub.add_parser(
        "check",
        help="agreement of every backend and precision of a model with eager fp32",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("model", help="model directory (holding config.json)")
    check.add_argument(
        "--images", required=True, help="folder of images (DIR/<label>/* also reports accuracy)"
    )
    check.add_argument("--device", help="cpu or cuda:N (default: the model's)")
    check.add_argument("--batch-size", type=int, default=32)
    check.add_argument("--limit", type=int, help="use only the first N images (sorted by path)")
    check.set_defaults(func=main)
