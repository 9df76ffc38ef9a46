"""The `bench` command's arguments. Standard library only: app.cli imports this to build its
parser, and nothing heavy may load until the command actually runs."""

from __future__ import annotations

import argparse
from pathlib import Path


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"header must be 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def add_arguments(p: argparse.ArgumentParser) -> None:
    served = p.add_argument_group("load against a running server")
    served.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    served.add_argument("--model", help="model name (the {model} of the request path)")
    served.add_argument(
        "--images", type=Path, help="folder of .jpg/.jpeg files, read once into memory and cycled"
    )
    served.add_argument("--max-files", type=int, help="use only the first N files of --images")
    served.add_argument(
        "--mode",
        default="raw",
        choices=["raw", "multipart", "v2", "v2-pixels", "grpc"],
        help="raw: one JPEG body; multipart: K file parts; v2: KServe V2 binary "
        "BYTES tensor; v2-pixels: V2 uint8 [K,224,224,3] decoded on the client; grpc: "
        "the same uint8 batch over KServe V2 gRPC (--url grpc://127.0.0.1:8001)",
    )
    served.add_argument("--images-per-request", type=int, default=1, metavar="K")
    served.add_argument(
        "--path",
        help="request path template (default from --mode; e.g. "
        "/predictions/{model} for TorchServe)",
    )
    served.add_argument(
        "--header",
        type=header,
        action="append",
        default=[],
        metavar="'N: V'",
        help="extra request header (gRPC metadata in grpc mode), e.g. "
        "'Authorization: Bearer TOKEN' (repeat)",
    )
    served.add_argument(
        "--concurrency",
        type=int_list,
        help="closed loop: workers per step, e.g. 1,4,16,32 (the default when no rate is given)",
    )
    served.add_argument(
        "--rate",
        type=float_list,
        help="open loop: Poisson arrivals, requests/s per step, e.g. 20,40,60",
    )
    served.add_argument(
        "--rate-fraction",
        type=float_list,
        help="open loop at these fractions of the peak, e.g. 0.5,0.8,0.95; the "
        "peak is --peak, or measured first in closed loop at the largest "
        "--concurrency (default 32)",
    )
    served.add_argument("--peak", type=float, help="peak requests/s for --rate-fraction")
    served.add_argument("--duration", type=float, default=20.0, help="seconds measured per step")
    served.add_argument(
        "--requests", type=int, help="answered requests per step instead of a duration"
    )
    served.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of load before each step, not measured"
    )
    served.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    served.add_argument(
        "--max-connections",
        type=int,
        default=512,
        help="open loop: most connections (requests beyond wait, and the wait "
        "counts in their latency)",
    )
    served.add_argument("--seed", type=int, default=0, help="open loop arrival times")
    served.add_argument(
        "--batch-histogram",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="read the server's resnet_serve_batch_size histogram before and after each step "
        "and report the batch sizes it formed (off for other servers, e.g. TorchServe)",
    )
    served.add_argument("--label", help="name of the system measured, for the JSON and plot")
    served.add_argument("--out", type=Path, help="write the results as JSON here")
    served.add_argument(
        "--plot", type=Path, help="PNG of latency against throughput (default: --out with .png)"
    )
    served.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress line on stderr (default: when stderr is a terminal)",
    )

    alone = p.add_argument_group("the backend alone")
    alone.add_argument(
        "--in-process",
        type=Path,
        metavar="MODEL_DIR",
        help="time the model directory's backend per batch size, no server",
    )
    alone.add_argument("--batch-sizes", type=int_list, default=[1, 2, 4, 8, 16, 32])
    alone.add_argument("--backend", help="override config.json's backend")
    alone.add_argument("--precision", help="override config.json's precision")
    alone.add_argument("--device", help="override config.json's device")
    alone.add_argument("--min-time", type=float, default=3.0, help="seconds per batch size")
