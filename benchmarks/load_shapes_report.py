"""The table of benchmarks/load_shapes.sh (issue 19's targets) from one result folder.

    python benchmarks/load_shapes_report.py RESULT_DIR

Targets, per backend (OpenVINO int8, ONNX Runtime int8), export defaults:
- c=1: served p50 <= in-process batch-1 p50 on all cores + decode p50 + 3 ms;
- c=16: >= 92 % of the decode-adjusted ceiling C / (C / img_s(batch 8) + decode_s), C = 2;
- Poisson at 50 / 80 / 95 % of the static scheduler's c=16 peak (the same rates for both
  schedulers): p99 <= 2.5 x p50 at 80 %, and no step worse
  than the static scheduler's in the same sitting;
- burst: every request answered, p99 stated, the next single request back at the c=1 p50.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

CORES = 2
BACKENDS = {"resnet50-ov-int8": "openvino", "resnet50-int8": "onnxruntime"}


def load(path: Path) -> dict[str, Any] | None:
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(folder: Path) -> None:
    rows: list[str] = [
        "| model | scheduler | c=1 p50 ms (target) | c=16 img/s (92 % of ceiling) "
        "| Poisson 50 % p50 / p99 ms | 80 % p50 / p99 ms (p99/p50) | 95 % p50 / p99 ms "
        "| burst ok, p99 ms, img/s | single after burst p50 ms | batches wide / narrow |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for model, backend in BACKENDS.items():
        inproc = load(folder / f"inproc-{backend}-int8.json")
        target_c1 = ceiling = None
        if inproc:
            by = {s["batch_size"]: s for s in inproc["steps"]}
            decode_ms = (inproc.get("decode") or {}).get("p50_ms") or 0.0
            if 1 in by:
                target_c1 = by[1]["p50_ms"] + decode_ms + 3.0
            if 8 in by:
                ceiling = CORES / (CORES / by[8]["images_per_s"] + decode_ms / 1000)
            notes.append(
                f"{backend} int8 in-process on all cores, ms per batch p50: "
                + ", ".join(f"bs{n} {s['p50_ms']:.1f}" for n, s in sorted(by.items()))
                + f"; decode p50 {decode_ms:.2f} ms; c=1 target {fmt(target_c1)} ms; "
                f"ceiling {fmt(ceiling)} img/s (92 %: {fmt(ceiling and 0.92 * ceiling)})"
            )
        for suffix, scheduler in (("", "adaptive"), ("-static", "static")):
            name = model + suffix
            closed = load(folder / f"closed-{name}.json")
            poisson = load(folder / f"poisson-{name}.json")
            burst = load(folder / f"burst-{name}.json")
            if not (closed or poisson or burst):
                continue
            c1 = c16 = None
            if closed:
                for s in closed["steps"]:
                    if s["concurrency"] == 1:
                        c1 = s
                    if s["concurrency"] == 16:
                        c16 = s
            c1_text = "-"
            if c1:
                ok = "" if target_c1 is None else (" ok" if c1["p50_ms"] <= target_c1 else " MISS")
                c1_text = f"{c1['p50_ms']:.1f} ({fmt(target_c1)}{ok})"
            c16_text = "-"
            if c16:
                share = c16["images_per_s"] / ceiling if ceiling else None
                ok = "" if share is None else (" ok" if share >= 0.92 else " MISS")
                c16_text = f"{c16['images_per_s']:.1f} ({fmt(share and 100 * share, 0)} %{ok})"
            steps = (poisson or {}).get("steps", [])
            cells = []
            for i, s in enumerate(steps[:3]):
                ratio = s["p99_ms"] / s["p50_ms"] if s.get("p50_ms") else None
                cell = f"{fmt(s['p50_ms'])} / {fmt(s['p99_ms'])}"
                if i == 1:
                    ok = "" if ratio is None else (" ok" if ratio <= 2.5 else " MISS")
                    cell += f" ({fmt(ratio, 2)}{ok})"
                cells.append(cell)
            cells += ["-"] * (3 - len(cells))
            burst_text = after_text = "-"
            modes = "-"
            if burst:
                b = burst["burst"]
                burst_text = (
                    f"{b['answered_ok']}/{b['count']}, {fmt(b['p99_ms'])}, {b['images_per_s']}"
                )
                after = burst["single_after"]["p50_ms"]
                before = c1["p50_ms"] if c1 else burst["single_before"]["p50_ms"]
                first = burst["first_single_after_ms"]
                after_text = f"{fmt(after)} (c=1 {fmt(before)}; first {first})"
                by_mode = burst["burst_batches"]["by_mode"]
                modes = f"{by_mode.get('wide', 0)} / {by_mode.get('narrow', 0)} (burst)"
            rows.append(
                f"| {model} | {scheduler} | {c1_text} | {c16_text} | "
                + " | ".join(cells)
                + f" | {burst_text} | {after_text} | {modes} |"
            )
    print("\n".join(rows))
    print()
    for n in notes:
        print(f"- {n}")
    decisions = folder / "scheduler.txt"
    if decisions.exists():
        print()
        for line in decisions.read_text().splitlines():
            print(f"    {line.split(' - ')[-1] if ' - ' in line else line}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
