"""resnet-serve: serve | export | bench | ray (and the commands other modules register)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from app.config import BatchingConfig, Settings


def serve_settings(args: argparse.Namespace) -> Settings:
    """Settings from the serve flags given, the environment (RESNET_SERVE_*) and defaults."""
    given = {f: getattr(args, f) for f in Settings.model_fields if f not in SECRET_SETTINGS}
    return Settings(**{k: v for k, v in given.items() if v is not None})


def _serve(args: argparse.Namespace) -> int:
    from app.main import create_app
    from app.observability.logs import configure_logging
    from app.server import serve, serve_workers

    settings = serve_settings(args)
    configure_logging(settings)  # text or JSON (RESNET_SERVE_LOG_FORMAT), request IDs
    if settings.workers > 1:
        return serve_workers(settings)
    serve(create_app(settings), settings)
    return 0


# `serve` has one flag per server setting (app.config.Settings), made from the field: its name
# (--max-body-bytes), its type, its description as help, its variable and default. A new
# setting is a new Settings field and nothing here. These flags keep their older names too:
FLAG_ALIASES: dict[str, list[str]] = {
    "models_dir": ["--models"],
    "model_control": ["--model-control-mode"],
}
# ... and a secret stays out of the command line (other users of the machine can read it).
SECRET_SETTINGS = frozenset({"auth_token"})


def _csv(text: str) -> list[str]:
    return [item for item in text.split(",") if item]


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Settings field; unset flags stay None (the environment, then the default,
    decides)."""
    for name, field in Settings.model_fields.items():
        if name in SECRET_SETTINGS:
            continue
        flags = [*FLAG_ALIASES.get(name, []), "--" + name.replace("_", "-")]
        default = field.get_default(call_default_factory=True)
        shown = "none" if default in (None, [], {}) else default
        env = f"RESNET_SERVE_{name.upper()}"
        help_text = f"{field.description} (env {env}, default {shown})".replace("%", "%%")
        kind = field.annotation
        options: dict[str, Any] = {"dest": name, "default": None, "help": help_text}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif get_origin(kind) is Literal:
            options["choices"] = list(get_args(kind))
        elif name == "backends":
            options["type"] = _csv
        else:  # int, float, Path, str, or a form its validator reads (name=module:Class,...)
            scalar = [t for t in get_args(kind) if t is not type(None)] or [kind]
            options["type"] = scalar[0] if scalar[0] in (int, float, Path) else str
        parser.add_argument(*flags, **options)


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

    serve = sub.add_parser(
        "serve",
        help="serve every model of a repository over HTTP (and V2 gRPC)",
        description="Every flag is a server setting, also read from its RESNET_SERVE_* "
        "variable (README, Configuration); a flag given wins over the variable.",
    )
    add_settings_flags(serve)
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
