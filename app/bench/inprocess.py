"""The backend alone, per batch size, and the decoder alone, per image: the ceilings that served
throughput is compared with. No HTTP, no batcher, no queue: what the served figures lose
against these numbers is what the server costs."""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from app.config import ModelConfig, read_model_config


def time_calls(fn: Callable[[], object], min_time: float, min_iters: int) -> list[float]:
    """Seconds per call, calling at least `min_iters` times and for at least `min_time` s."""
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - started < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def model_config(
    model_dir: Path,
    batch_sizes: list[int],
    backend: str | None = None,
    precision: str | None = None,
    device: str | None = None,
) -> ModelConfig:
    """The model's config.json, with the overrides asked for and room for the largest batch."""
    cfg = read_model_config(model_dir)
    overrides: dict[str, Any] = {
        k: v
        for k, v in {"backend": backend, "precision": precision, "device": device}.items()
        if v is not None
    }
    largest = max(batch_sizes)
    if largest > cfg.batching.max_batch_size:
        overrides["batching"] = {**cfg.batching.model_dump(), "max_batch_size": largest}
    return cfg.variant(cfg.name, **overrides) if overrides else cfg


def sample_batch(cfg: ModelConfig, size: int, pixels: list[np.ndarray] | None) -> np.ndarray:
    if pixels:
        return np.stack([pixels[i % len(pixels)] for i in range(size)])
    crop = cfg.input.crop
    return np.random.default_rng(0).integers(0, 256, (size, crop, crop, 3), dtype=np.uint8)


def bench_backend(
    cfg: ModelConfig,
    batch_sizes: list[int],
    min_time: float = 2.0,
    min_iters: int = 3,
    pixels: list[np.ndarray] | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Load the backend, warm every batch size, then time `infer` per batch size."""
    from app.backends import loaded_backend

    t0 = time.perf_counter()
    with loaded_backend(cfg) as backend:
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        backend.warmup(batch_sizes)
        warmup_s = time.perf_counter() - t0
        info = {**backend.info().as_dict(), "load_s": load_s, "warmup_s": warmup_s}
        rows = []
        for size in batch_sizes:
            batch = sample_batch(cfg, size, pixels)
            backend.infer(batch)  # once more, in case warm-up used other data
            times = time_calls(functools.partial(backend.infer, batch), min_time, min_iters)
            p50 = statistics.median(times)
            row = {
                "batch_size": size,
                "iterations": len(times),
                "p50_ms": p50 * 1000,
                "p90_ms": float(np.percentile(times, 90)) * 1000,
                "min_ms": min(times) * 1000,
                "ms_per_image": p50 * 1000 / size,
                "images_per_s": size / p50,
            }
            rows.append(row)
            if on_row is not None:
                on_row(row)
        return info, rows


def bench_decode(images: list[bytes], cfg: ModelConfig, min_time: float = 2.0) -> dict[str, Any]:
    """app.preprocess.decode per image, on this one thread: the decode ceiling per core."""
    from app.preprocess import decode

    index = 0

    def one() -> None:
        nonlocal index
        decode(images[index % len(images)], cfg.input, max_pixels=1 << 62)
        index += 1

    for data in images:  # each file once, untimed (page cache, Pillow's plugin imports)
        decode(data, cfg.input, max_pixels=1 << 62)
    times = time_calls(one, min_time, max(3, len(images)))
    p50 = statistics.median(times)
    return {
        "files": len(images),
        "iterations": len(times),
        "p50_ms": p50 * 1000,
        "mean_ms": statistics.fmean(times) * 1000,
        "p90_ms": float(np.percentile(times, 90)) * 1000,
        "images_per_s_per_core": len(times) / sum(times),
    }


def decode_all(images: list[bytes], cfg: ModelConfig) -> list[np.ndarray]:
    from app.preprocess import decode

    return [decode(data, cfg.input, max_pixels=1 << 62) for data in images]
