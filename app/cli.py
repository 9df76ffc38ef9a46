"""resnet-serve: serve | export | bench | ray (and the commands other modules register)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from app.config import BatchingConfig


def _serve(args: argparse.Namespace) -> int:
    from app.config import Settings
    from app.main import create_app
    from app.server import serve, serve_workers

    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "models_dir": args.models,
            "host": args.host,
            "port": args.port,
            "log_level": args.log_level,
            "backends": args.backends,
            "workers": args.workers,
            "grpc_port": args.grpc_port,
            "model_control": args.model_control_mode,
        }.items()
        if v is not None
    }
    settings = Settings(**overrides)
    from app.observability.logs import configure_logging

    configure_logging(settings)  # text or JSON (RESNET_SERVE_LOG_FORMAT), request IDs
    if settings.workers > 1:
        return serve_workers(settings)
    serve(create_app(settings), settings)
    return 0


def _export(args: argparse.Namespace) -> int:
    from app.errors import ServeError
    from app.offline.export import ExportError, export_model

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    calibration = Path(args.calibration_images) if args.calibration_images else None
    labels = Path(args.labels).read_text().splitlines() if args.labels else None
    batching = BatchingConfig(
        max_batch_size=args.max_batch_size,
        max_queue_delay_ms=args.max_queue_delay_ms,
        instances=args.instances,
    )
    try:
        if args.recipe == "digits":
            from app.offline.recipes import digits

            digits.export(
                Path(args.out or "models/digits"),
                precisions,
                calibration,
                formats,
                name=args.name,
                batching=batching,
            )
            return 0
        out = Path(args.out) if args.out else Path("models") / args.arch
        export_model(
            args.arch,
            args.weights,
            formats,
            out,
            name=args.name,
            allow_random_fallback=args.allow_random_fallback,
            seed=args.seed,
            labels=labels,
            batching=batching,
            precisions=precisions,
            calibration_images=calibration,
        )
    except (ExportError, FileNotFoundError, ServeError) as exc:  # ServeError: a bad image
        print(f"export failed: {exc}", file=sys.stderr)
        return 2
    return 0


def _bench(args: argparse.Namespace) -> int:
    from app.bench.run import main as bench_main

    return bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resnet-serve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve every model of a repository over HTTP")
    serve.add_argument("--models", type=Path, help="model repository (env RESNET_SERVE_MODELS_DIR)")
    serve.add_argument("--host", help="address (env RESNET_SERVE_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (env RESNET_SERVE_PORT, default 8000)")
    serve.add_argument("--log-level", help="debug, info, warning (env RESNET_SERVE_LOG_LEVEL)")
    serve.add_argument(
        "--backends",
        type=lambda s: [b for b in s.split(",") if b],
        help="also serve every model on these backends, as <model>-<backend> "
        "(e.g. torchscript,eager) to compare them side by side",
    )
    serve.add_argument(
        "--workers", type=int, help="server processes sharing the port (env RESNET_SERVE_WORKERS)"
    )
    serve.add_argument(
        "--grpc-port",
        type=int,
        help="KServe V2 gRPC port, 0 for none (env RESNET_SERVE_GRPC_PORT, default 8001)",
    )
    serve.add_argument(
        "--model-control-mode",
        choices=["none", "explicit"],
        help="none: serve the repository as found at start; explicit: allow the repository "
        "API's load and unload (env RESNET_SERVE_MODEL_CONTROL, default none)",
    )
    serve.set_defaults(func=_serve)

    export = sub.add_parser("export", help="export a torchvision ResNet to a model directory")
    export.add_argument(
        "--arch", default="resnet50", help="resnet18, resnet34, resnet50, resnet101 or resnet152"
    )
    export.add_argument(
        "--weights",
        default="imagenet",
        help="imagenet (torchvision DEFAULT), random, or a state_dict file",
    )
    export.add_argument(
        "--formats",
        default="eager,torchscript,onnx",
        help="comma-separated: eager, torchscript, onnx",
    )
    export.add_argument("--out", help="model directory (default models/<arch>)")
    export.add_argument("--name", help="model name (default: the directory's name)")
    export.add_argument("--labels", help="file with one class name per line")
    export.add_argument(
        "--allow-random-fallback",
        action="store_true",
        help="if ImageNet weights cannot be downloaded, export random ones "
        "(loudly, and recorded in config.json)",
    )
    export.add_argument("--seed", type=int, default=0)
    export.add_argument(
        "--precisions",
        default="",
        help="also export reduced precisions, comma-separated: int8 (ONNX "
        "static QDQ), fp16 (ONNX, for CUDA/TensorRT), bf16 (TorchScript)",
    )
    export.add_argument(
        "--calibration-images",
        help="folder of images that calibrates int8 (the recipe's default: its training images)",
    )
    export.add_argument(
        "--recipe",
        choices=["digits"],
        help="export a model trained here instead of --arch/--weights: digits "
        "= resnet-mini trained on scikit-learn's digits (out: models/digits)",
    )
    export.add_argument("--max-batch-size", type=int, default=8)
    export.add_argument("--max-queue-delay-ms", type=float, default=0.0)
    export.add_argument(
        "--instances", type=int, default=0, help="0 (default): from the thread budget at load"
    )
    export.set_defaults(func=_export)

    from app.offline.check import add_parser as add_check

    add_check(sub)

    from app.bench.tune import add_parser as add_tune  # the command's code loads when it runs

    add_tune(sub)

    from app.bench.options import add_arguments as add_bench_arguments

    bench = sub.add_parser("bench", help="load a running server, or time a backend in-process")
    add_bench_arguments(bench)
    bench.set_defaults(func=_bench)

    from app.ray_serve.command import add_parser as add_ray  # imports ray only when run

    add_ray(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
