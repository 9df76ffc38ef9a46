"""The table of benchmarks/observability_cost.sh: per mode (off, traced, json, base), the
median over rounds of served img/s, p50 and p99, their range, and the change against `off`.

    python benchmarks/observability_table.py RESULTS_DIR
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

MODES = {
    "off": "tracing off, text log, no access log",
    "traced": "tracing on, sampling 1.0 (always_on), OTLP/HTTP to a local receiver",
    "json": "JSON log, one access line per request",
    "base": "the code before issue 20 (BASELINE_REF)",
}


def steps(results: Path, mode: str) -> list[dict[str, float]]:
    out = []
    for path in sorted(results.glob(f"{mode}-*.json")):
        (step,) = json.loads(path.read_text())["steps"]
        out.append(
            {
                "img_s": float(step["images_per_s"]),
                "p50": float(step["p50_ms"]),
                "p99": float(step["p99_ms"]),
                "errors": float(sum(step["errors"].values())),
            }
        )
    return out


def spans_received(results: Path) -> str:
    text = (results / "receiver.log").read_text() if (results / "receiver.log").exists() else ""
    counts = re.findall(r"(\d+) spans in (\d+) exports", text)
    return f"{counts[-1][0]} spans in {counts[-1][1]} exports" if counts else "none seen"


def main() -> None:
    results = Path(sys.argv[1])
    setup = (results / "setup.txt").read_text().strip() if (results / "setup.txt").exists() else ""
    rows: dict[str, dict[str, float]] = {}
    print(f"Results in {results}\n\n```\n{setup}\n```\n")
    print("| mode | rounds | img/s (median, range) | p50 ms | p99 ms | img/s vs off | p99 vs off |")
    print("|---|---|---|---|---|---|---|")
    for mode, what in MODES.items():
        found = steps(results, mode)
        if not found:
            continue
        med = {k: statistics.median(s[k] for s in found) for k in ("img_s", "p50", "p99")}
        rows[mode] = med
        lo, hi = min(s["img_s"] for s in found), max(s["img_s"] for s in found)
        errors = int(sum(s["errors"] for s in found))
        off = rows.get("off")
        d_img = f"{100 * (med['img_s'] / off['img_s'] - 1):+.1f} %" if off else "-"
        d_p99 = f"{100 * (med['p99'] / off['p99'] - 1):+.1f} %" if off else "-"
        note = f" ({errors} errors)" if errors else ""
        print(
            f"| {mode}: {what}{note} | {len(found)} | {med['img_s']:.1f} ({lo:.1f}-{hi:.1f}) "
            f"| {med['p50']:.1f} | {med['p99']:.1f} | {d_img} | {d_p99} |"
        )
    print(f"\nOTLP receiver: {spans_received(results)}")


if __name__ == "__main__":
    main()
