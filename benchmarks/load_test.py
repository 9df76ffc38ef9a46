"""Load test (issue 4): at least 50,000 requests at high concurrency against a real server on
127.0.0.1, with a real trained model (the digits resnet-mini on ONNX Runtime, so the run is
bounded by the server, not by ResNet-50 on two cores).

Checks: zero failed requests while the concurrency stays below the queue limit, and the
server's resident memory at the end within 10% of its memory after warm-up. Prints a summary
and writes JSON; exits non-zero if a check fails.

    .venv/bin/python benchmarks/load_test.py --requests 50000 --concurrency 64 \
        --out bench-results/load.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def run(cmd: list[str], **kw: Any) -> None:
    subprocess.run(cmd, cwd=ROOT, check=True, **kw)


def bench(url: str, images: Path, concurrency: int, requests: int, out: Path) -> dict[str, Any]:
    run(
        [
            PY,
            "-m",
            "app.cli",
            "bench",
            "--url",
            url,
            "--model",
            "digits",
            "--images",
            str(images),
            "--concurrency",
            str(concurrency),
            "--requests",
            str(requests),
            "--warmup",
            "0",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--warmup-requests", type=int, default=3_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--queue-size", type=int, default=256)
    parser.add_argument("--port", type=int, default=18555)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "load.json")
    args = parser.parse_args()
    assert args.concurrency < args.queue_size, "the test is for load below the queue limit"
    work = Path(tempfile.mkdtemp(prefix="resnet-serve-load-"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        run(
            [
                PY,
                "-m",
                "app.offline.recipes.digits",
                "images",
                "--split",
                "test",
                "--out",
                str(work / "split"),
            ]
        )
        flat = work / "images"
        flat.mkdir()
        for i, f in enumerate(sorted((work / "split").rglob("*.jpg"))):
            shutil.copy(f, flat / f"{i:04d}.jpg")
        run(
            [
                PY,
                "-m",
                "app.cli",
                "export",
                "--recipe",
                "digits",
                "--formats",
                "onnx",
                "--max-batch-size",
                "32",
                "--out",
                str(work / "models" / "digits"),
            ],
            stdout=subprocess.DEVNULL,
        )
        cfg_path = work / "models" / "digits" / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["batching"]["max_queue_size"] = args.queue_size
        cfg_path.write_text(json.dumps(cfg))
        log = open(work / "server.log", "wb")
        server = subprocess.Popen(
            [
                PY,
                "-m",
                "app.cli",
                "serve",
                "--models",
                str(work / "models"),
                "--port",
                str(args.port),
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{args.port}"
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        warm = bench(url, flat, args.concurrency, args.warmup_requests, work / "warm.json")
        rss_warm = rss_mib(server.pid)
        started = time.monotonic()
        main_run = bench(url, flat, args.concurrency, args.requests, work / "main.json")
        elapsed = time.monotonic() - started
        rss_end = rss_mib(server.pid)
        server.terminate()
        code = server.wait(60)
        step = main_run["steps"][0] if "steps" in main_run else main_run
        errors = step.get("errors") or {}
        failed = int(step.get("failed", 0))
        summary: dict[str, Any] = {
            "requests": step.get("requests"),
            "failed": failed,
            "errors_by_status": errors,
            "requests_per_s": step.get("requests_per_s"),
            "p50_ms": step.get("p50_ms"),
            "p99_ms": step.get("p99_ms"),
            "p99_9_ms": step.get("p99_9_ms"),
            "max_ms": step.get("max_ms"),
            "wall_s": round(elapsed, 1),
            "rss_after_warmup_mib": round(rss_warm, 1),
            "rss_at_end_mib": round(rss_end, 1),
            "rss_growth_pct": round(100 * (rss_end - rss_warm) / rss_warm, 2),
            "server_exit_code": code,
            "warmup": {"requests": (warm.get("steps") or [warm])[0].get("requests")},
        }
        args.out.write_text(json.dumps({"summary": summary, "bench": main_run}, indent=2))
        print(json.dumps(summary, indent=2))
        ok = (
            failed == 0
            and abs(summary["rss_growth_pct"]) <= 10
            and code == 0
            and (summary["requests"] or 0) >= args.requests
        )
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
