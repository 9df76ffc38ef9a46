"""The burst test of issue 19: after idle, N requests arrive at once, then idle again; then single
requests. Every request must be answered; prints the burst's p50/p90/p99/max, the batches the
server formed by mode (resnet_serve_batches_total) and size, and the single-request latency
before and after the burst.

    python benchmarks/burst.py --url http://127.0.0.1:8000 --model resnet50-ov-int8 \
        --images IMAGES_DIR [--count 200] [--singles 30] [--idle 2] [--out burst.json]

The N connections are opened first (keep-alive, as a client pool holds them), then every
request is written at the same instant: latency runs from that instant, so it holds the whole
queueing of the burst. Singles are sent one at a time, each after the previous answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from app.bench.client import Connection
from app.bench.payload import DEFAULT_PATHS, Target, build_bodies, http_request, load_images


def mode_batches(url: str, model: str) -> dict[str, float]:
    """resnet_serve_batches_total of `model` by mode, and the batch-size histogram's sum and
    count (images and batches)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    out: dict[str, float] = {}
    label = re.escape(f'model="{model}"')
    for m in re.finditer(
        rf'^resnet_serve_batches_total\{{(?=[^}}]*{label})[^}}]*mode="(\w+)"[^}}]*\}} (\S+)$',
        text,
        re.M,
    ):
        out[m.group(1)] = float(m.group(2))
    for part in ("sum", "count"):
        series = rf"^resnet_serve_batch_size_{part}\{{[^}}]*{label}[^}}]*\}} (\S+)$"
        m2 = re.search(series, text, re.M)
        if m2:
            out[f"batch_size_{part}"] = float(m2.group(1))
    return out


def pct(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    a = np.asarray(values) * 1000
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p90_ms": round(float(np.percentile(a, 90)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
        "max_ms": round(float(a.max()), 2),
    }


async def singles(target: Target, requests: list[bytes], count: int) -> list[float]:
    conn = await Connection.open(target.host, target.port)
    out: list[float] = []
    try:
        for i in range(count):
            t0 = time.perf_counter()
            status = await conn.send(requests[i % len(requests)])
            if status != 200:
                raise RuntimeError(f"single request answered {status}: {conn.error_text()}")
            out.append(time.perf_counter() - t0)
    finally:
        conn.close()
    return out


async def burst(
    target: Target, requests: list[bytes], count: int, timeout: float
) -> dict[str, Any]:
    conns = await asyncio.gather(*(Connection.open(target.host, target.port) for _ in range(count)))
    await asyncio.sleep(0.5)  # the accepts are done: the server is idle again
    latencies: list[float] = []
    errors: dict[str, int] = {}
    start = time.perf_counter()

    async def one(i: int) -> None:
        try:
            async with asyncio.timeout(timeout):
                status = await conns[i].send(requests[i % len(requests)])
        except (OSError, TimeoutError) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            return
        if status == 200:
            latencies.append(time.perf_counter() - start)
        else:
            errors[str(status)] = errors.get(str(status), 0) + 1

    await asyncio.gather(*(one(i) for i in range(count)))
    makespan = time.perf_counter() - start
    for c in conns:
        c.close()
    return {
        "count": count,
        "answered_ok": len(latencies),
        "errors": errors,
        "makespan_s": round(makespan, 3),
        "images_per_s": round(len(latencies) / makespan, 1),
        **pct(latencies),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--model", required=True)
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--count", type=int, default=200, help="requests in the burst")
    p.add_argument("--singles", type=int, default=30, help="single requests before and after")
    p.add_argument("--idle", type=float, default=2.0, help="seconds of idle around the burst")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    target = Target.parse(args.url, DEFAULT_PATHS["raw"].format(model=args.model))
    bodies = build_bodies(load_images(args.images), "raw", 1)
    requests = [http_request(target, b) for b in bodies]

    async def run() -> dict[str, Any]:
        await singles(target, requests, 5)  # warm (connections, caches), not counted
        before = pct(await singles(target, requests, args.singles))
        await asyncio.sleep(args.idle)
        m0 = mode_batches(args.url, args.model)
        result = await burst(target, requests, args.count, args.timeout)
        m1 = mode_batches(args.url, args.model)
        await asyncio.sleep(args.idle)
        first_after = await singles(target, requests, 1)
        after = pct(first_after + await singles(target, requests, args.singles - 1))
        batches = {k: m1.get(k, 0.0) - m0.get(k, 0.0) for k in m1}
        n = batches.pop("batch_size_count", 0.0)
        images = batches.pop("batch_size_sum", 0.0)
        return {
            "model": args.model,
            "burst": result,
            "burst_batches": {
                "by_mode": {k: int(v) for k, v in batches.items() if v},
                "batches": int(n),
                "mean_batch_size": round(images / n, 2) if n else None,
            },
            "single_before": before,
            "single_after": after,
            "first_single_after_ms": round(first_after[0] * 1000, 2),
        }

    out = asyncio.run(run())
    b = out["burst"]
    print(
        f"burst {args.model}: {b['answered_ok']}/{b['count']} answered "
        f"(errors {b['errors'] or 'none'}) in {b['makespan_s']} s ({b['images_per_s']} img/s); "
        f"p50 {b['p50_ms']} p90 {b['p90_ms']} p99 {b['p99_ms']} max {b['max_ms']} ms; "
        f"batches {out['burst_batches']}"
    )
    print(
        f"single requests: before p50 {out['single_before']['p50_ms']} ms, after p50 "
        f"{out['single_after']['p50_ms']} ms (first after: {out['first_single_after_ms']} ms)"
    )
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if b["answered_ok"] == b["count"] else 1


if __name__ == "__main__":
    sys.exit(main())
