"""`resnet-serve bench`: served load (closed or open loop) or the backend alone (--in-process)."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
from pathlib import Path
from typing import Any

from app.bench import batches, report
from app.bench.client import LoadGenerator
from app.bench.payload import DEFAULT_PATHS, Target, build_bodies, http_request, load_images
from app.bench.progress import Progress


def main(args: argparse.Namespace) -> int:
    if args.in_process is not None:
        return run_in_process(args)
    return run_served(args)


def _fail(message: str) -> int:
    print(f"bench: {message}", file=sys.stderr)
    return 2


def _event_loop_runner() -> asyncio.Runner:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def run_served(args: argparse.Namespace) -> int:
    if not args.model:
        return _fail("--model is required (or --in-process MODEL_DIR)")
    if args.images is None:
        return _fail("--images DIR is required: a folder of JPEG files to send")
    if args.requests is not None and args.requests < 1:
        return _fail("--requests must be at least 1")
    try:
        images = load_images(args.images, args.max_files)
        bodies = build_bodies(images, args.mode, args.images_per_request, args.model)
        path = (args.path or DEFAULT_PATHS[args.mode]).format(model=args.model)
        target = Target.parse(args.url, path)
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    duration = None if args.requests is not None else args.duration
    common: dict[str, Any] = {
        "images_per_request": args.images_per_request,
        "timeout": args.timeout,
        "progress": Progress(force=args.progress),
    }
    gen: LoadGenerator
    if args.mode == "grpc":
        from app.bench.grpc_client import GrpcLoadGenerator

        if not args.url.startswith("grpc://"):
            return _fail("--mode grpc needs --url grpc://HOST:PORT (the server's gRPC port)")
        requests = [b.data for b in bodies]
        gen = GrpcLoadGenerator(target.host, target.port, requests, args.header, **common)
    else:
        requests = [http_request(target, b, args.header) for b in bodies]
        gen = LoadGenerator(target.host, target.port, requests, **common)
    label = args.label or f"{args.model} at {args.url}"
    print(
        f"bench {label}: POST {path} mode={args.mode} images/request={args.images_per_request} "
        f"files={len(images)} "
        f"avg body={sum(len(b.data) for b in bodies) / len(bodies) / 1024:.1f} KiB "
        f"{f'duration={duration:g}s' if duration else f'requests={args.requests:d}'} "
        f"warmup={args.warmup:g}s",
        flush=True,
    )

    summaries: list[dict[str, Any]] = []
    peak: float | None = args.peak

    def batch_sizes() -> dict[str, float] | None:
        """The server's batch-size histogram now (None: not a resnet-serve server)."""
        if not args.batch_histogram:
            return None
        return batches.scrape(args.url, args.model, dict(args.header))

    def show(step_summary: dict[str, Any], before: dict[str, float] | None = None) -> None:
        if before is not None:  # the batches the server formed during this step
            step_summary["batch_sizes"] = batches.difference(before, batch_sizes())
        summaries.append(step_summary)
        print(report.table_row(step_summary), flush=True)
        if before is not None:
            print(batches.format_histogram(step_summary["batch_sizes"]), flush=True)
        if step_summary["error_samples"]:
            print(report.format_error_samples(step_summary), flush=True)
        if step_summary.get("max_send_lag_ms", 0) > 50:
            print(
                f"  warning: the client fell {step_summary['max_send_lag_ms']:.0f} ms behind "
                "its arrival schedule (client-bound?)",
                flush=True,
            )

    async def steps() -> None:
        nonlocal peak
        await gen.check()
        print(report.HEADER, flush=True)
        concurrency = args.concurrency
        if concurrency is None and not args.rate and not args.rate_fraction:
            concurrency = [1, 4, 16, 32]
        for c in concurrency or []:
            before = batch_sizes()
            s = await gen.closed_loop(c, duration, args.requests, args.warmup)
            show(report.clean(s.summary()), before)
        rates = list(args.rate or [])
        if args.rate_fraction:
            if peak is None:
                c = max(concurrency or [32])
                measured = [x for x in summaries if x["loop"] == "closed" and x["concurrency"] == c]
                if not measured:
                    print(f"measuring the peak: closed loop at concurrency {c}", flush=True)
                    before = batch_sizes()
                    s = await gen.closed_loop(c, duration, args.requests, args.warmup)
                    show(report.clean(s.summary()), before)
                    measured = [summaries[-1]]
                peak = max(x["ok_per_s"] or 0.0 for x in measured)
                if not peak:
                    raise RuntimeError("no request succeeded while measuring the peak")
            print(
                f"peak {peak:.1f} requests/s; open loop at "
                f"{', '.join(f'{f:g}' for f in args.rate_fraction)} of it",
                flush=True,
            )
            rates += [round(f * peak, 2) for f in args.rate_fraction]
        for r in rates:
            before = batch_sizes()
            s = await gen.open_loop(
                r,
                duration,
                args.requests,
                args.warmup,
                max_connections=args.max_connections,
                seed=args.seed,
            )
            show(report.clean(s.summary()), before)
        if hasattr(gen, "aclose"):
            await gen.aclose()

    try:
        with _event_loop_runner() as runner:
            runner.run(steps())
    except (ConnectionRefusedError, OSError) as exc:
        if not summaries:
            return _fail(f"cannot connect to {args.url}: {exc}")
        raise
    except RuntimeError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("\ninterrupted; writing what was measured", file=sys.stderr)

    print("\n" + report.format_table(summaries))
    meta = {
        "kind": "served",
        "label": label,
        "url": args.url,
        "model": args.model,
        "path": path,
        "mode": args.mode,
        "images_per_request": args.images_per_request,
        "image_files": len(images),
        "duration_s": duration,
        "requests_per_step": args.requests,
        "warmup_s": args.warmup,
        "peak_requests_per_s": peak,
        "argv": sys.argv[1:],
    }
    if args.out:
        report.write_json(args.out, meta, summaries)
        print(f"wrote {args.out}")
    plot_path = args.plot or (args.out.with_suffix(".png") if args.out else None)
    if plot_path and args.plot is None and importlib.util.find_spec("matplotlib") is None:
        print("no matplotlib: plot skipped")  # a bare GPU machine (benchmarks/gpu_check.sh)
    elif plot_path:
        report.plot(
            plot_path,
            summaries,
            f"{label}: {args.mode}, {args.images_per_request} image(s)/request",
        )
        print(f"wrote {plot_path}")
    return 0


def run_in_process(args: argparse.Namespace) -> int:
    from app.bench.inprocess import bench_backend, bench_decode, decode_all, model_config

    model_dir: Path = args.in_process
    try:
        cfg = model_config(model_dir, args.batch_sizes, args.backend, args.precision, args.device)
        images = load_images(args.images, args.max_files) if args.images else []
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    pixels = decode_all(images, cfg) if images else None
    print(
        f"in-process {cfg.name}: backend={cfg.backend} precision={cfg.precision} "
        f"device={cfg.device} batch sizes {','.join(map(str, args.batch_sizes))}, "
        f"{args.min_time:g} s each",
        flush=True,
    )
    header_printed = False

    def on_row(row: dict[str, Any]) -> None:
        nonlocal header_printed
        lines = report.format_inprocess([row]).splitlines()
        print("\n".join(lines if not header_printed else lines[1:]), flush=True)
        header_printed = True

    try:
        info, rows = bench_backend(
            cfg, args.batch_sizes, args.min_time, pixels=pixels, on_row=on_row
        )
    except Exception as exc:
        return _fail(f"backend {cfg.backend} failed: {type(exc).__name__}: {exc}")
    print(
        f"providers: {', '.join(info['providers'])}; load {info['load_s']:.2f} s, "
        f"warm-up {info['warmup_s']:.2f} s"
    )
    decode_row = None
    if images:
        decode_row = bench_decode(images, cfg, args.min_time)
        print(
            f"decode (app.preprocess.decode, one thread, {decode_row['files']} files): "
            f"p50 {decode_row['p50_ms']:.2f} ms/image, mean {decode_row['mean_ms']:.2f} ms, "
            f"{decode_row['images_per_s_per_core']:.0f} images/s per core"
        )
    if args.out:
        meta = {
            "kind": "in-process",
            "model": cfg.name,
            "model_dir": str(model_dir),
            "backend": cfg.backend,
            "precision": cfg.precision,
            "device": cfg.device,
            "backend_info": info,
            "decode": decode_row,
            "argv": sys.argv[1:],
        }
        report.write_json(args.out, meta, rows)
        print(f"wrote {args.out}")
    return 0
