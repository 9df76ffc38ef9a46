"""GPU pipeline throughput, per batch size: nvJPEG decode + resize + crop alone, the model alone,
and the whole path the server runs for input.decode "gpu" (TorchRunner.run_encoded: decode,
resize, crop, normalise, model, logits back to the host).

    python benchmarks/gpu_pipeline.py                          # ResNet-50 fp16 on cuda:0
    python benchmarks/gpu_pipeline.py --batch-sizes 32 128 256 --compile
    python benchmarks/gpu_pipeline.py --images ~/imagenet-val-sample/   # your own JPEGs
    python benchmarks/gpu_pipeline.py --cpu-baseline           # adds Pillow decode on 1 core
    python benchmarks/gpu_pipeline.py --instances 1 2 4        # pipeline with N instances
    python benchmarks/gpu_pipeline.py --processes 4            # N processes, a model each

Images: synthetic photo-like 500x375 JPEGs (ImageNet's typical size), or every *.jpg/*.jpeg
under --images. Weights are random (no download): throughput does not depend on them.
On a machine without CUDA it says so and exits 2. `--device cpu` runs the same code on the CPU
with tiny sizes as a smoke test of the script; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # imported inside main(): the script starts without torch
    import torch

    from app.backends.torch.models import TorchRunner
    from app.preprocess import EncodedImage

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def synthetic_jpegs(
    count: int, size: tuple[int, int] = (500, 375), first_seed: int = 0
) -> list[bytes]:
    """`count` photo-like JPEGs, deterministic: seeds first_seed .. first_seed + count - 1."""
    from PIL import Image, ImageDraw, ImageFilter

    out = []
    for seed in range(first_seed, first_seed + count):
        rng = np.random.default_rng(seed)
        w, h = size
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([(x * (seed % 7 + 1)) % 256, (y * 3) % 256, (x + y + 40 * seed) % 256], -1)
        img = Image.fromarray(base.astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(8):
            x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            draw.ellipse(
                (x0, y0, x0 + int(rng.integers(20, 200)), y0 + int(rng.integers(20, 200))),
                fill=color,
            )
        img = img.filter(ImageFilter.GaussianBlur(1.5))
        noisy = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, (h, w, 3))
        buf = io.BytesIO()
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def write_json(path: Path, data: object) -> None:
    """Replace path with data at once (a reader never sees half a file)."""
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(data, indent=2) + "\n")
    part.replace(path)


def load_jpegs(folder: Path, limit: int) -> list[bytes]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))[:limit]
    if not files:
        raise SystemExit(f"no .jpg/.jpeg files under {folder}")
    return [p.read_bytes() for p in files]


def timed(
    fn: Callable[[], object],
    images_per_call: int,
    sync: Callable[[], None],
    min_seconds: float,
    warmup: int,
) -> float:
    """img/s of fn, after `warmup` calls, over at least min_seconds (and at least 3 calls)."""
    for _ in range(warmup):
        fn()
    sync()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        if calls >= 3:
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                return calls * images_per_call / elapsed


def threaded(
    runners: list[TorchRunner], batch: list[EncodedImage], bs: int, seconds: float, warmup: int
) -> float:
    """img/s of len(runners) threads, each looping run_encoded on its own runner and stream."""
    import threading

    for runner in runners:
        for _ in range(warmup):
            runner.run_encoded(batch, bs)
    counts = [0] * len(runners)
    start_line = threading.Barrier(len(runners) + 1)
    stop = threading.Event()

    def loop(k: int) -> None:
        start_line.wait()
        while not stop.is_set() or counts[k] < 1:
            runners[k].run_encoded(batch, bs)  # synchronises its own stream
            counts[k] += 1

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(len(runners))]
    for t in threads:
        t.start()
    start_line.wait()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) * bs / (time.perf_counter() - start)


# type-ignore reason: multiprocessing's primitives, passed across processes, are untyped here
def _process_worker(settings: dict, bs: int, ready, start, stop, results) -> None:  # type: ignore[no-untyped-def, type-arg]
    """One process: its own model (eager, or compiled), runner and stream, looping the pipeline
    between the parent's start and stop; puts its count of batches."""
    import torch

    from app.backends.torch.models import TorchRunner, build_arch, compile_module, wrap
    from app.config import PreprocessConfig
    from app.preprocess import inspect

    cfg = PreprocessConfig(resize=settings["resize"], crop=settings["crop"], decode="gpu")
    datas = (
        load_jpegs(Path(settings["images"]), settings["num_images"])
        if settings.get("images")
        else synthetic_jpegs(settings["num_images"])
    )
    encoded = [inspect(d, cfg, 1 << 40) for d in datas]
    batch = [encoded[i % len(encoded)] for i in range(bs)]
    torch.manual_seed(0)
    model = build_arch(settings["arch"], 1000)
    module = wrap(model, cfg.mean, cfg.std, settings["device"], settings["precision"], True)
    if settings["compiled"]:
        module = compile_module(module, "default", 1)
    runner = TorchRunner(module, settings["device"], bs, (cfg.crop, cfg.crop, 3), cfg)
    for _ in range(max(1, settings["warmup"])):
        runner.run_encoded(batch, bs)
    ready.put(1)
    start.wait()
    count = 0
    while not stop.is_set() or count < 1:
        runner.run_encoded(batch, bs)
        count += 1
    results.put(count)


# type-ignore reason: settings is the JSON dict of the pipeline's options, as read
def multiprocess(settings: dict, n: int, bs: int, seconds: float, timeout: float) -> float:  # type: ignore[type-arg]
    """img/s of n processes, each a whole pipeline on the same GPU (what --workers gives the
    server, without HTTP)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    ready, results = ctx.Queue(), ctx.Queue()
    start, stop = ctx.Event(), ctx.Event()
    procs = [
        ctx.Process(target=_process_worker, args=(settings, bs, ready, start, stop, results))
        for _ in range(n)
    ]
    for proc in procs:
        proc.start()
    try:
        for _ in procs:
            ready.get(timeout=timeout)
        t0 = time.perf_counter()
        start.set()
        time.sleep(seconds)
        stop.set()
        counts = [results.get(timeout=timeout) for _ in procs]
        elapsed = time.perf_counter() - t0
    finally:
        stop.set()
        start.set()
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    return float(sum(counts) * bs / elapsed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--precision", default=None, help="fp16 on CUDA (default), fp32 on CPU")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64, 128, 256])
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd model")
    parser.add_argument("--images", type=Path, help="folder of JPEGs (default: synthetic)")
    parser.add_argument("--num-images", type=int, default=256)
    parser.add_argument("--resize", type=int, default=256)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed span per figure")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--instances",
        type=int,
        nargs="+",
        default=[1],
        help="also time the pipeline with N instances, each a thread with its own runner and "
        "CUDA stream, as the server runs batching.instances",
    )
    parser.add_argument(
        "--processes",
        type=int,
        nargs="+",
        default=[1],
        help="also time the pipeline with N processes on the one GPU, each with its own model "
        "(compiled too with --compile), as `serve --workers N` runs it, without HTTP",
    )
    parser.add_argument(
        "--process-timeout", type=float, default=240.0, help="seconds a process may take to start"
    )
    parser.add_argument("--cpu-baseline", action="store_true", help="Pillow decode, 1 thread")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    import torch

    from app.backends.torch.gpu_decode import decode_batch
    from app.backends.torch.models import TorchRunner, build_arch, compile_module, wrap
    from app.config import PreprocessConfig
    from app.preprocess import decode, inspect

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print(
            f"gpu_pipeline: no CUDA device (torch {torch.__version__}, CUDA build "
            f"{torch.version.cuda or 'none'}, torch.cuda.is_available() is False). This benchmark "
            "measures nvJPEG and the GPU model; run it on a GPU machine "
            "(or pass --device cpu for a smoke test whose figures mean nothing).",
            file=sys.stderr,
        )
        return 2
    precision = args.precision or ("fp16" if cuda else "fp32")
    cfg = PreprocessConfig(resize=args.resize, crop=args.crop, decode="gpu")

    datas = (
        load_jpegs(args.images, args.num_images)
        if args.images
        else synthetic_jpegs(args.num_images)
    )
    encoded = [inspect(d, cfg, 1 << 40) for d in datas]
    on_gpu = sum(e.data is not None for e in encoded)
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    print(
        f"device {name}, torch {torch.__version__}, {args.arch} {precision} channels_last, "
        f"{len(datas)} JPEGs ({on_gpu} go to nvJPEG, {len(datas) - on_gpu} to the CPU decoder)"
    )

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    torch.manual_seed(0)
    model = build_arch(args.arch, 1000)
    module = wrap(model, cfg.mean, cfg.std, str(device), precision, channels_last=True)
    modules: dict[str, Any] = {"eager": module}
    if args.compile:
        modules["compiled"] = compile_module(module, "default", len(args.batch_sizes))

    results: list[dict[str, object]] = []
    stream = torch.cuda.Stream(device) if cuda else None

    def emit(partial: dict[str, object] | None = None) -> None:
        """Rewrite --json with every figure so far (a step cut short keeps what it measured)."""
        if args.json:
            rows = results + ([{**partial, "partial": True}] if partial else [])
            write_json(
                args.json,
                {"device": name, "arch": args.arch, "precision": precision, "results": rows},
            )

    def batch_of(n: int) -> list[EncodedImage]:
        return [encoded[i % len(encoded)] for i in range(n)]

    for bs in args.batch_sizes:
        batch = batch_of(bs)
        row: dict[str, object] = {"batch": bs}

        def decode_only(batch: list[EncodedImage] = batch, bs: int = bs) -> None:
            if stream is not None:
                with torch.cuda.stream(stream):
                    decode_batch(batch, cfg, device, bs)
            else:
                decode_batch(batch, cfg, device, bs)

        row["decode_resize"] = timed(decode_only, bs, sync, args.seconds, args.warmup)
        emit(row)
        x = torch.randint(0, 256, (bs, args.crop, args.crop, 3), dtype=torch.uint8, device=device)
        for label, mod in modules.items():

            def model_only(mod: Any = mod, x: torch.Tensor = x) -> None:
                with torch.inference_mode():
                    mod(x)

            row[f"model_{label}"] = timed(model_only, bs, sync, args.seconds, args.warmup)
            emit(row)
            runner = TorchRunner(mod, str(device), bs, (args.crop, args.crop, 3), cfg)
            row[f"pipeline_{label}"] = timed(
                functools.partial(runner.run_encoded, batch, bs),
                bs,
                sync,
                args.seconds,
                args.warmup,
            )
            emit(row)
            for n in (i for i in args.instances if i > 1):
                runners = [
                    TorchRunner(mod, str(device), bs, (args.crop, args.crop, 3), cfg)
                    for _ in range(n)
                ]
                row[f"pipeline_{label}_x{n}"] = threaded(
                    runners, batch, bs, args.seconds, args.warmup
                )
                emit(row)
            for n in (i for i in args.processes if i > 1):
                settings = {
                    "arch": args.arch,
                    "device": str(device),
                    "precision": precision,
                    "resize": args.resize,
                    "crop": args.crop,
                    "num_images": min(args.num_images, 64),
                    "warmup": args.warmup,
                    "compiled": label == "compiled",
                    "images": str(args.images) if args.images else None,
                }
                row[f"pipeline_{label}_{n}proc"] = multiprocess(
                    settings, n, bs, max(args.seconds, 0.5), args.process_timeout
                )
                emit(row)
        results.append(row)
        emit()
        print(
            "  ".join(
                f"{k} {v:,.0f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
            ),
            "(img/s)",
            flush=True,
        )

    if args.cpu_baseline:
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < args.seconds or n < 3:
            decode(datas[n % len(datas)], cfg, 1 << 40)
            n += 1
        cpu = n / (time.perf_counter() - start)
        print(f"CPU baseline (Pillow decode + resize + crop, 1 thread): {cpu:,.0f} img/s")
        results.append({"cpu_pillow_one_thread": cpu})

    emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
