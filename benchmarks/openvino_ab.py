"""Interleaved A/B runs in one process for the OpenVINO backend's design choices (ratios only:
run them on a quiet machine for figures). Each round runs A then B (then B then A) for
`--seconds` each, so both see the same background load; prints img/s per round and the ratio
of the medians.

  python benchmarks/openvino_ab.py models/resnet50 shapes   # dynamic batch vs one per bucket
  python benchmarks/openvino_ab.py models/resnet50 hint     # 2 LATENCY instances vs THROUGHPUT
  python benchmarks/openvino_ab.py models/resnet50 int8-rest  # int8 with f32 vs bf16 remainder
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.config import read_model_config


def compile_model(path: Path, props: dict[str, Any], batch: int | None = None) -> Any:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    name = model.inputs[0].get_any_name()
    model.reshape({name: [batch or -1, 224, 224, 3]})
    return core.compile_model(model, "CPU", props)


def run_threads(jobs: list[Any], seconds: float) -> float:
    """Each job() runs one batch and returns its size; all jobs in parallel threads."""
    done = [0] * len(jobs)
    stop = time.monotonic() + seconds

    def loop(i: int) -> None:
        while time.monotonic() < stop:
            done[i] += jobs[i]()

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(jobs))]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.monotonic() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("what", choices=["shapes", "hint", "int8-rest"])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    cfg = read_model_config(args.model)
    rng = np.random.default_rng(0)
    batches = {n: rng.integers(0, 256, (n, 224, 224, 3), dtype=np.uint8) for n in range(1, 9)}
    int8 = cfg.path_of("onnx-int8")
    base = {"INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": False}
    lat = {**base, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}

    def job(compiled: Any, sizes: list[int], buckets: dict[int, Any] | None = None) -> Any:
        state = {"i": 0}
        dyn = compiled.create_infer_request() if compiled is not None else None
        reqs = {n: c.create_infer_request() for n, c in (buckets or {}).items()}

        def one() -> int:
            n = sizes[state["i"] % len(sizes)]
            state["i"] += 1
            if dyn is not None:
                dyn.infer({0: batches[n]})
            else:
                size = next(b for b in sorted(reqs) if b >= n)
                x = np.zeros((size, 224, 224, 3), np.uint8)
                x[:n] = batches[n]
                reqs[size].infer({0: x})
            return n

        return one

    mixed = [1, 3, 8, 2, 5, 8, 4, 7, 6, 8]  # batch sizes as a loaded batcher forms them
    if args.what == "shapes":
        props = {**lat, "INFERENCE_NUM_THREADS": 1}
        a = [job(compile_model(int8, props), mixed) for _ in range(2)]
        b = [
            job(None, mixed, {n: compile_model(int8, props, n) for n in (1, 2, 4, 8)})
            for _ in range(2)
        ]
        names = ("dynamic batch", "one compiled model per bucket (padded)")
    elif args.what == "hint":
        a = [job(compile_model(int8, {**lat, "INFERENCE_NUM_THREADS": 1}), [8]) for _ in range(2)]
        shared = compile_model(int8, {**base, "PERFORMANCE_HINT": "THROUGHPUT"})
        print(
            "THROUGHPUT streams:",
            shared.get_property("NUM_STREAMS"),
            "optimal requests:",
            shared.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"),
        )
        b = [job(shared, [8]) for _ in range(2)]
        names = ("2 instances, LATENCY, 1 thread each", "1 model, THROUGHPUT, 2 requests")
    else:
        a = [job(compile_model(int8, {**lat, "INFERENCE_NUM_THREADS": 1}), [8]) for _ in range(2)]
        bf = {**lat, "INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "bf16"}
        b = [job(compile_model(int8, bf), [8]) for _ in range(2)]
        names = ("int8, rest f32", "int8, rest bf16")
    for jobs in (a, b):  # warm every shape
        for j in jobs:
            for _ in range(len(mixed)):
                j()
    ra: list[float] = []
    rb: list[float] = []
    for r in range(args.rounds):
        order = [(a, ra), (b, rb)] if r % 2 == 0 else [(b, rb), (a, ra)]
        for jobs, out in order:
            out.append(run_threads(jobs, args.seconds))
        print(f"round {r}: A {ra[-1]:.1f} img/s, B {rb[-1]:.1f} img/s")
    ma, mb = statistics.median(ra), statistics.median(rb)
    print(f"A = {names[0]}: median {ma:.1f} img/s")
    print(f"B = {names[1]}: median {mb:.1f} img/s")
    print(f"B/A = {mb / ma:.3f} (measured under whatever load this machine has: ratio only)")


if __name__ == "__main__":
    main()
