"""Interleaved A/B in one process: one ONNX Runtime session using every core for each batch
against one session per core of one thread each (the thread budget's default on 2 cores), both
fed batches continuously. A sanity check of app/threads.py's rule, in-process only (the served
comparison, which also overlaps batch forming with compute, is issue 15's own measurement).
Ratio only when the machine is loaded.

  python benchmarks/threads_ab.py models/resnet50 [--precision int8] [--batch 8] [--rounds 6]
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.config import read_model_config


def session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run(sessions: list[Any], batch: np.ndarray, seconds: float) -> float:
    done = [0] * len(sessions)
    stop = time.monotonic() + seconds

    def loop(i: int) -> None:
        while time.monotonic() < stop:
            sessions[i].run(None, {"images": batch})
            done[i] += len(batch)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(sessions))]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.monotonic() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--precision", default="int8", choices=["fp32", "int8"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    cfg = read_model_config(args.model)
    path = cfg.path_of("onnx-int8" if args.precision == "int8" else "onnx")
    cores = len(os.sched_getaffinity(0))
    crop = cfg.input.crop
    batch = np.random.default_rng(0).integers(0, 256, (args.batch, crop, crop, 3), np.uint8)
    a = [session(path, cores)]
    b = [session(path, 1) for _ in range(cores)]
    for s in (*a, *b):
        s.run(None, {"images": batch})
    ra: list[float] = []
    rb: list[float] = []
    for r in range(args.rounds):
        for sessions, out in [(a, ra), (b, rb)] if r % 2 == 0 else [(b, rb), (a, ra)]:
            out.append(run(sessions, batch, args.seconds))
        print(f"round {r}: A {ra[-1]:.1f} img/s, B {rb[-1]:.1f} img/s", flush=True)
    ma, mb = statistics.median(ra), statistics.median(rb)
    print(f"A = 1 session x {cores} threads: median {ma:.1f} img/s")
    print(f"B = {cores} sessions x 1 thread: median {mb:.1f} img/s")
    print(f"B/A = {mb / ma:.3f} (ratio only when the machine is loaded)")


if __name__ == "__main__":
    main()
