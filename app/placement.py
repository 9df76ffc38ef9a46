"""Which device each instance of a model runs on (no torch import unless 'all' GPUs are asked for).

`device: "cuda"` with `instances: 4` keeps every instance on cuda:0, each with its own CUDA
stream. `devices: ["cuda:0", "cuda:1"]` (or "all") places the instances round-robin over those
GPUs: instance i on devices[i % len(devices)].

GPU decoding (input.decode "gpu") keeps a model's instances on one GPU per process:
torchvision keeps ONE nvJPEG decoder per process, behind a lock, and rebuilds it (leaking the
old one) whenever a call names another device than the last. To use several GPUs with GPU
decoding, run one server process per GPU (CUDA_VISIBLE_DEVICES) instead.
"""

from __future__ import annotations

from collections.abc import Callable

from app.config import ModelConfig


def cuda_device_count() -> int:
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def instance_devices(
    config: ModelConfig, device_count: Callable[[], int] = cuda_device_count
) -> list[str]:
    """The device of each of config.batching.instances, in order."""
    n = config.batching.instances
    if not config.devices:
        _check_compile_mode(config, n)
        return [config.device] * n
    if config.devices == "all":
        count = device_count()
        if count < 1:
            raise RuntimeError(
                f"model {config.name!r} asks for devices 'all', but no CUDA device is visible"
            )
        pool = [f"cuda:{i}" for i in range(count)]
    else:
        pool = list(config.devices)
    placed = [pool[i % len(pool)] for i in range(n)]
    _check_compile_mode(config, len(placed))
    if config.input.decode == "gpu" and len(set(placed)) > 1:
        raise RuntimeError(
            f"model {config.name!r}: input.decode 'gpu' keeps every instance on one GPU "
            f"(torchvision has one nvJPEG decoder per process), but devices places them on "
            f"{', '.join(sorted(set(placed)))}; run one server per GPU instead"
        )
    return placed


def _check_compile_mode(config: ModelConfig, instances: int) -> None:
    """torch.compile's reduce-overhead mode records CUDA graphs through CUDA graph trees, whose
    state assumes one Python thread: each instance loads and runs on its own thread, and with
    two or more the second fails on torch 2.11 (pytorch/pytorch#123177, still open upstream).
    Refused with the way out rather than failing at the first batch."""
    if config.torch.compile and config.torch.compile_mode == "reduce-overhead" and instances > 1:
        raise RuntimeError(
            f"model {config.name!r}: torch.compile mode 'reduce-overhead' (CUDA graphs) runs in "
            f"one instance per process, but {instances} instances are asked for (CUDA graph "
            "trees are not thread-safe: pytorch/pytorch#123177); set batching.instances to 1 "
            "and scale with --workers, or use compile_mode 'default' with several instances"
        )


def instance_configs(
    config: ModelConfig, device_count: Callable[[], int] = cuda_device_count
) -> list[ModelConfig]:
    """One config per instance, each naming its own device (the model's own when unchanged)."""
    return [
        config if device == config.device else config.model_copy(update={"device": device})
        for device in instance_devices(config, device_count)
    ]
