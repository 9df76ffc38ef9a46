"""nvJPEG decode figures and the multi-chunk stream-race check, for benchmarks/gpu_check.sh.

    python benchmarks/gpu_decode_check.py --json decode.json            # cuda:0
    python benchmarks/gpu_decode_check.py --device cpu --small          # plumbing only

Measures, on synthetic 500x375 photos (ImageNet's typical size):
- decode only: torchvision.io.decode_jpeg, batched (nvJPEG on CUDA), img/s per batch size;
- decode + crop + resize: app.backends.torch.gpu_decode.decode_batch, img/s;
- batched against per-image resize: the same decoded batch through crop_resize once for all
  images and once per image (a ratio; the host's Python cost per call is what differs);
and checks the stream race: phone-size photos (12 Mpx by default) decoded in chunks of at most
64 Mpx must give exactly the pixels of one chunk, over several rounds.

Whether the hardware JPEG engine ran cannot be read from torchvision; gpu_check.sh samples
`nvidia-smi dmon` (its jpg column) while this script runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 256])
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--race-rounds", type=int, default=3)
    p.add_argument("--race-size", type=int, nargs=2, default=[4000, 3000], metavar=("W", "H"))
    p.add_argument("--race-images", type=int, default=16)
    p.add_argument("--small", action="store_true", help="tiny sizes (a plumbing check)")
    p.add_argument("--images", type=Path, help="JPEGs to time (gpu_images.py's small/)")
    p.add_argument("--race-dir", type=Path, help="photos for the race (gpu_images.py's race/)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    import torch
    from gpu_images import load_folder
    from gpu_pipeline import synthetic_jpegs, write_json
    from torchvision.io import ImageReadMode, decode_jpeg

    import app.backends.torch.gpu_decode as gd
    from app.config import PreprocessConfig
    from app.preprocess import inspect

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("gpu_decode_check: no CUDA device", file=sys.stderr)
        return 2
    if args.small:
        args.batch_sizes, args.seconds = [4], 0.05
        args.race_size, args.race_images, args.race_rounds = [320, 240], 6, 1
    cfg = PreprocessConfig(decode="gpu")
    stream = torch.cuda.Stream(device) if cuda else None

    def sync() -> None:
        if stream is not None:
            stream.synchronize()

    def on_stream(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            if stream is None:
                return fn()
            with torch.cuda.stream(stream):
                return fn()

        return run

    # type-ignore reason: a local helper over untyped callables, checked by running it
    def rate(fn, per_call: int) -> float:  # type: ignore[no-untyped-def]
        fn()
        sync()
        calls, start = 0, time.perf_counter()
        while calls < 3 or time.perf_counter() - start < args.seconds:
            fn()
            calls += 1
        sync()
        return calls * per_call / (time.perf_counter() - start)

    jpegs = load_folder(args.images) if args.images else synthetic_jpegs(64)
    encoded = [inspect(d, cfg, 1 << 40) for d in jpegs]
    report: dict[str, object] = {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__,
        "decode": [],
    }

    def resize_each(images: list[Any]) -> list[Any]:
        return [gd.resize_crop(x, cfg) for x in images]

    for bs in args.batch_sizes:
        datas = [jpegs[i % len(jpegs)] for i in range(bs)]
        tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
        batch = [encoded[i % len(encoded)] for i in range(bs)]
        decode_only = rate(
            on_stream(partial(decode_jpeg, tensors, mode=ImageReadMode.RGB, device=device)), bs
        )
        full = rate(on_stream(partial(gd.decode_batch, batch, cfg, device, bs)), bs)
        decoded = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
        stacked = torch.stack(list(decoded))
        together = rate(on_stream(partial(gd.crop_resize, stacked, cfg)), bs)
        apart = rate(on_stream(partial(resize_each, decoded)), bs)
        row = {
            "batch": bs,
            "decode_img_s": decode_only,
            "decode_crop_resize_img_s": full,
            "resize_batched_img_s": together,
            "resize_per_image_img_s": apart,
        }
        # type-ignore reason: report is a dict of mixed values; 'decode' holds a list
        report["decode"].append(row)  # type: ignore[attr-defined]
        if args.json:  # each row as it comes: a step cut short keeps what it measured
            write_json(args.json, report)
        print(
            f"batch {bs}: decode {decode_only:,.0f} img/s, decode+crop+resize {full:,.0f} img/s, "
            f"resize batched {together:,.0f} vs per image {apart:,.0f} img/s",
            flush=True,
        )

    # the stream race: many chunks must give the pixels of one
    photos = (
        load_folder(args.race_dir)
        if args.race_dir
        else synthetic_jpegs(args.race_images, tuple(args.race_size))
    )
    images = [inspect(d, cfg, 1 << 40) for d in photos]
    w, h = images[0].width, images[0].height
    total = sum(im.width * im.height for im in images)
    budget = gd.DECODE_CHUNK_PIXELS if not args.small else max(1, total // 3)
    chunks = len(gd._chunks(images, budget))
    mismatches = 0
    seconds = 0.0
    worst, changed = 0, 0.0
    n = len(images)
    with torch.inference_mode():
        for _ in range(args.race_rounds):
            guard = gd.StreamGuard(device)
            reference = on_stream(
                lambda: gd.decode_batch(images, cfg, device, n, chunk_pixels=total)
            )()
            sync()
            start = time.perf_counter()
            chunked = on_stream(
                lambda g=guard: gd.decode_batch(  # type: ignore[misc]  # defaults bind the loop's values
                    images, cfg, device, n, chunk_pixels=budget, guard=g
                )
            )()
            sync()
            seconds += time.perf_counter() - start
            # a race overwrites whole regions; a resize matmul run at another batch count may
            # move a rare pixel by one level (another cuBLAS algorithm): that is not a race
            diff = (reference[0].int() - chunked[0].int()).abs()
            worst = max(worst, int(diff.max()))
            changed = max(changed, float((diff > 0).float().mean()))
            same = int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 1e-3
            same = same and not reference[1] and not chunked[1]
            mismatches += 0 if same else 1
    big_rate = len(images) * args.race_rounds / seconds if seconds else 0.0
    report["race"] = {
        "images": len(images),
        "size": [w, h],
        "chunks": chunks,
        "rounds": args.race_rounds,
        "mismatched_rounds": mismatches,
        "max_diff": worst,
        "changed_fraction": changed,
        "ok": mismatches == 0,
        "decode_crop_resize_img_s": big_rate,
    }
    verdict = (
        f"{mismatches} rounds DIFFER (max {worst} levels)"
        if mismatches
        else "identical to one chunk"
        if worst == 0
        else f"one chunk's pixels within {worst} level ({changed:.1e} of them)"
    )
    print(
        f"multi-chunk race check: {len(images)} x {w}x{h} in {chunks} chunks, "
        f"{args.race_rounds} rounds: {verdict}; {big_rate:,.1f} img/s decode+crop+resize",
        flush=True,
    )
    if args.json:
        write_json(args.json, report)
    return 0 if mismatches == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
