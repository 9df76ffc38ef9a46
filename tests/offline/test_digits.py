"""The shipped trained model: small enough to commit, really trained, and seen as served."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.backends.torch.models import build_arch, wrap
from app.offline.agreement import accuracy
from app.offline.imagefolder import load_images
from app.offline.recipes import digits


def eager(weights: Path | dict) -> torch.nn.Module:
    model = build_arch(digits.ARCH, len(digits.LABELS))
    state = torch.load(weights, weights_only=True) if isinstance(weights, Path) else weights
    model.load_state_dict(state)
    p = digits.PREPROCESS
    return wrap(model.eval(), p.mean, p.std, "cpu", "fp32", channels_last=False)


def test_committed_weights_are_small_and_torchvision_resnet() -> None:
    from torchvision.models.resnet import BasicBlock, ResNet

    assert digits.WEIGHTS.is_file()
    assert digits.WEIGHTS.stat().st_size < 2_000_000
    model = build_arch("resnet-mini", 10)
    assert isinstance(model, ResNet)
    assert all(isinstance(b, BasicBlock) for layer in (model.layer1, model.layer4) for b in layer)


def test_splits_are_fixed_stratified_and_complete(digits_images: dict[str, Path]) -> None:
    train_x, _ = digits.load_split("train")
    test_x, test_y = digits.load_split("test")
    assert (len(train_x), len(test_x)) == (1257, 540)
    counts = np.bincount(test_y, minlength=10)
    assert counts.min() >= 52 and counts.max() <= 56  # stratified: 30 % of each digit
    assert digits.load_split("test")[0].tobytes() == test_x.tobytes()  # the same every time
    files = list(digits_images["test"].rglob("*.jpg"))
    assert len(files) == 540 and {f.parent.name for f in files} == set(digits.LABELS)


def test_held_out_accuracy_of_the_committed_model(digits_images: dict[str, Path]) -> None:
    """Read back from the JPEG files through the server's own decode, as a request would be."""
    data = load_images(digits_images["test"], digits.PREPROCESS, digits.LABELS)
    assert data.truth is not None and data.images.shape == (540, 56, 56, 3)
    with torch.inference_mode():
        logits = eager(digits.WEIGHTS)(torch.from_numpy(data.images)).numpy()
    acc = accuracy(logits, data.truth)
    print(f"held-out accuracy {acc:.4f}")
    assert acc >= 0.99  # measured 0.9963 (538 / 540)


def test_untrained_model_is_at_chance(digits_images: dict[str, Path]) -> None:
    """The accuracy above comes from training, not from the data being trivial."""
    data = load_images(digits_images["test"], digits.PREPROCESS, digits.LABELS)
    torch.manual_seed(0)
    assert data.truth is not None
    untrained = eager(build_arch(digits.ARCH, 10).state_dict())
    with torch.inference_mode():
        acc = accuracy(untrained(torch.from_numpy(data.images)).numpy(), data.truth)
    assert acc < 0.3


@pytest.mark.slow
def test_training_recipe_learns(digits_images: dict[str, Path]) -> None:
    """Two epochs of the recipe that made the committed weights already beat chance by far."""
    state = digits.train(digits_images["train"], epochs=2, seed=0, log=False)
    data = load_images(digits_images["test"], digits.PREPROCESS, digits.LABELS)
    assert data.truth is not None
    with torch.inference_mode():
        acc = accuracy(eager(state)(torch.from_numpy(data.images)).numpy(), data.truth)
    assert acc > 0.6
