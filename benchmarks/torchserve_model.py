"""The same ResNet as a resnet-serve export, as TorchScript that TorchServe's built-in
`image_classifier` handler can feed: float NCHW, already normalised (the handler resizes,
crops and normalises in Python, as torchvision's ImageNet transforms do).

resnet-serve's own TorchScript file takes uint8 NHWC and normalises inside; the network and its
weights are the same: both come from the export's `eager` state_dict, which this script loads.

    python benchmarks/torchserve_model.py models/resnet50 /tmp/ts/resnet50.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from app.backends.torch.models import build_arch
from app.config import read_model_config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("model_dir", type=Path, help="a resnet-serve export with an eager state_dict")
    p.add_argument("out", type=Path, help="TorchScript file to write")
    args = p.parse_args(argv)

    cfg = read_model_config(args.model_dir)
    state = torch.load(cfg.path_of("eager"), map_location="cpu", weights_only=True)
    model = build_arch(cfg.arch, cfg.num_classes)
    model.load_state_dict(state)
    model.eval()
    example = torch.zeros(1, 3, cfg.input.crop, cfg.input.crop)
    with torch.no_grad():
        scripted = torch.jit.freeze(torch.jit.trace(model, (example,)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(scripted, str(args.out))
    print(f"wrote {args.out} ({cfg.arch}, weights: {cfg.weights}, float NCHW input)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
