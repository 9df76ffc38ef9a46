"""Torch helpers shared by the export tool and the torch backends (imports torch: load lazily).

The served graph takes what the batcher hands over, uint8 NHWC, and normalises on the model's
own device and precision: 4x fewer bytes cross to a GPU than float32 would.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet-mini")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class UInt8Classifier(nn.Module):
    """uint8 (N, H, W, 3) -> normalised float (N, 3, H, W) -> model -> float32 logits."""

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
        return self.model(x).float()


class MiniResNet(ResNet):
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
    return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)


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
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


class TorchRunner:
    """Runs a UInt8Classifier-like module on one device: pinned uint8 staging buffer, a CUDA
    stream of its own (so several instances overlap copy and compute), inference mode."""

    def __init__(self, module: nn.Module, device: str, max_batch: int, image_shape: tuple[int, ...]):
        self.module = module
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.stream = torch.cuda.Stream(device=self.device) if self.cuda else None
        self.staging = (
            torch.empty((max_batch, *image_shape), dtype=torch.uint8).pin_memory()
            if self.cuda else None
        )

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        host = torch.from_numpy(batch)
        with torch.inference_mode():
            if not self.cuda:
                return self.module(host).numpy()
            assert self.stream is not None and self.staging is not None
            n = host.shape[0]
            if n <= self.staging.shape[0]:
                staged = self.staging[:n]
                staged.copy_(host)
            else:  # larger than planned: pin a copy once
                staged = host.pin_memory()
            with torch.cuda.stream(self.stream):
                x = staged.to(self.device, non_blocking=True)
                out = self.module(x).to("cpu", non_blocking=True)
            self.stream.synchronize()
            return out.numpy()

    def close(self) -> None:
        self.module = None  # type: ignore[assignment]
        self.staging = None
        if self.cuda:
            torch.cuda.empty_cache()


def set_threads(threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)
