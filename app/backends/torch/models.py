"""Torch helpers shared by the export tool and the torch backends (imports torch: load lazily).

The served graph takes what the batcher hands over, uint8 NHWC, and normalises on the model's
own device and precision: 4x fewer bytes cross to a GPU than float32 would.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from app.config import PreprocessConfig
from app.preprocess import EncodedImage

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet-mini")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class UInt8Classifier(nn.Module):
    """uint8 (N, H, W, 3) -> normalised float (N, 3, H, W) -> model -> float32 logits."""

    scale: torch.Tensor  # buffers, registered in __init__
    shift: torch.Tensor

    def __init__(
        self,
        model: nn.Module,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> None:
        super().__init__()
        self.model = model
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std_t))
        self.register_buffer("shift", mean_t / std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # permute keeps the NHWC memory: the view is channels_last, what the convs prefer.
        x = x.permute(0, 3, 1, 2).to(self.scale.dtype)
        x = x * self.scale - self.shift
        logits: torch.Tensor = self.model(x)
        return logits.float()


class MiniResNet(ResNet):  # type: ignore[misc]  # torchvision ships no types: ResNet is Any
    """torchvision's ResNet with BasicBlocks, one block per stage and a narrow stem.

    torchvision fixes the stage widths at 64-128-256-512 for BasicBlock; this rebuilds the
    stem, the four stages and the head at `width`-2w-4w-8w with torchvision's own
    `_make_layer` and initialisation, so the forward pass is torchvision's, unchanged.
    width 16 has 0.31 M parameters (1.2 MB of fp32 weights).
    """

    def __init__(
        self, num_classes: int = 10, width: int = 16, layers: tuple[int, ...] = (1, 1, 1, 1)
    ) -> None:
        super().__init__(BasicBlock, list(layers), num_classes=num_classes)
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._make_layer(BasicBlock, width, layers[0])
        self.layer2 = self._make_layer(BasicBlock, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(BasicBlock, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(BasicBlock, 8 * width, layers[3], stride=2)
        self.fc = nn.Linear(8 * width * BasicBlock.expansion, num_classes)
        for m in self.modules():  # torchvision ResNet's initialisation, for the new layers
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


def build_arch(arch: str, num_classes: int = 1000) -> nn.Module:
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if arch == "resnet-mini":
        return MiniResNet(num_classes=num_classes)
    model: nn.Module = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    return model


def wrap(
    model: nn.Module,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    device: str = "cpu",
    precision: str = "fp32",
    channels_last: bool = True,
) -> UInt8Classifier:
    if precision not in DTYPES:
        raise ValueError(f"torch backends run fp32, fp16 or bf16, not {precision!r}")
    if precision == "fp16" and not device.startswith("cuda"):
        raise ValueError("fp16 needs a CUDA device; on the CPU use bf16")
    wrapped = UInt8Classifier(model, mean, std).eval()
    wrapped = wrapped.to(device=device, dtype=DTYPES[precision])
    if channels_last:
        wrapped = wrapped.to(memory_format=torch.channels_last)
    return wrapped


@contextmanager
def quiet_torch() -> Iterator[None]:
    """Keep torch's deprecation chatter (torch.jit.trace, the legacy ONNX exporter) out of
    users' faces; real errors still raise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        tracer_warning = torch.jit.TracerWarning  # type: ignore[attr-defined]  # not in the stubs
        warnings.simplefilter("ignore", tracer_warning)
        yield


def require_cuda(device: str, why: str = "") -> None:
    """Fail with a reason a person can act on, not torch's 'not compiled with CUDA'."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        build = f"torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}"
        raise RuntimeError(
            f"device {device!r}{why} needs CUDA, but torch.cuda.is_available() is False on this "
            f"machine ({build}); use device 'cpu' with input.decode 'cpu', or run on a GPU host"
        )
    if device.startswith("cuda:"):
        index, count = int(device[5:]), torch.cuda.device_count()
        if index >= count:
            raise RuntimeError(f"device {device!r}: this machine has {count} CUDA device(s)")


class TorchRunner:
    """Runs a UInt8Classifier-like module on one device: pinned uint8 staging buffer, a CUDA
    stream of its own (so several instances overlap copy and compute), inference mode.

    Each backend instance owns one runner, and one runner serves one batch at a time (the
    batcher gives every instance its own thread): the staging buffer is only refilled after
    the previous batch's stream.synchronize(), so no async copy still reads it.
    """

    def __init__(
        self,
        module: nn.Module,
        device: str,
        max_batch: int,
        image_shape: tuple[int, ...],
        preprocess: PreprocessConfig | None = None,
    ):
        from app.backends.torch.gpu_decode import DecodeFallbacks

        self.module = module
        self.device = torch.device(device)
        self.fallbacks = DecodeFallbacks(str(device))
        self.cuda = self.device.type == "cuda"
        self.preprocess = preprocess
        self.stream = torch.cuda.Stream(device=self.device) if self.cuda else None
        self.staging = (
            torch.empty((max_batch, *image_shape), dtype=torch.uint8).pin_memory()
            if self.cuda
            else None
        )

    def _on_device(self) -> contextlib.AbstractContextManager[object]:
        """This runner's device and stream (a thread's current device is not ours to assume:
        instances may sit on different GPUs)."""
        if not self.cuda:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.cuda.device(self.device))
        stack.enter_context(torch.cuda.stream(self.stream))
        return stack

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        # A V2 tensor arrives as a read-only view of the request body (np.frombuffer), which
        # torch.from_numpy warns about: on the GPU it is copied into the pinned staging buffer
        # through numpy (no warning, no extra copy); on the CPU only such a view is copied.
        with torch.inference_mode():
            if not self.cuda:
                host = torch.from_numpy(batch if batch.flags.writeable else batch.copy())
                logits: np.ndarray = self.module(host).numpy()
                return logits
            assert self.stream is not None and self.staging is not None
            n = batch.shape[0]
            if n <= self.staging.shape[0]:
                staged = self.staging[:n]
                staged.numpy()[...] = batch
            else:  # larger than max_batch_size (a direct caller, never the batcher): one-off
                staged = torch.tensor(batch).pin_memory()
            with self._on_device():
                x = staged.to(self.device, non_blocking=True)
                out = self.module(x).to("cpu", non_blocking=True)
            self.stream.synchronize()
            result: np.ndarray = out.numpy()
            return result

    def run_encoded(
        self, images: list[EncodedImage], pad_to: int
    ) -> tuple[np.ndarray, dict[int, Exception]]:
        """Decode (nvJPEG on CUDA), resize, crop and infer on this runner's device and stream:
        -> (logits of the pad_to rows, {row: error} of the images no decoder could read)."""
        from app.backends.torch.gpu_decode import decode_batch

        assert self.preprocess is not None, "run_encoded needs the model's input config"
        with torch.inference_mode(), self._on_device():
            x, errors = decode_batch(
                images, self.preprocess, self.device, pad_to, fallbacks=self.fallbacks
            )
            out = self.module(x).to("cpu", non_blocking=self.cuda)
        if self.stream is not None:
            self.stream.synchronize()
        return out.numpy(), errors

    def close(self) -> None:
        # drop the module so its device memory can go; a closed runner is never called again
        self.module = None  # type: ignore[assignment]  # see the line above
        self.staging = None
        if self.cuda:
            torch.cuda.empty_cache()


_compiled_graphs = 0  # graphs dynamo keeps for the modules compiled in this process
_compile_lock = threading.Lock()


def raise_recompile_limit(graphs: int) -> int:
    """Let dynamo keep `graphs` more compiled graphs per code object, and return the limit.

    torch.compile(dynamic=False) compiles one graph per input shape, and dynamo keeps at most
    `recompile_limit` (8 by default; `cache_size_limit` before torch 2.6) per code object;
    past it, new shapes silently run uncompiled. Every UInt8Classifier shares one forward(),
    so the limit grows with every compiled model instance in the process."""
    import torch._dynamo.config as dynamo_config

    global _compiled_graphs
    with _compile_lock:
        _compiled_graphs += graphs
        name = (
            "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
        )
        limit = max(int(getattr(dynamo_config, name)), _compiled_graphs)
        setattr(dynamo_config, name, limit)
        for total in ("accumulated_recompile_limit", "accumulated_cache_size_limit"):
            if hasattr(dynamo_config, total):
                setattr(dynamo_config, total, max(int(getattr(dynamo_config, total)), limit))
                break
        return limit


def compile_module(
    module: nn.Module, mode: str, batch_sizes: int, backend: Any = "inductor"
) -> Any:
    """torch.compile for fixed shapes, with room in dynamo's cache for every batch size."""
    raise_recompile_limit(batch_sizes)
    return torch.compile(module, mode=mode, dynamic=False, backend=backend)


def set_threads(threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)
