"""What served_vs_inprocess.sh measured, against the issue's targets.

Reads the results folder: inprocess.json (`bench --in-process`), served.json (closed loop),
open.json (open loop at fractions of the peak, optional) and c<N>.wrk.json (wrk, optional).

    python benchmarks/served_summary.py RESULTS_DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("results", type=Path)
    args = p.parse_args(argv)
    inproc, served, open_ = (
        read(args.results / n) for n in ("inprocess.json", "served.json", "open.json")
    )
    if inproc is None or served is None:
        print("need inprocess.json and served.json", file=sys.stderr)
        return 1
    lines: list[str] = []
    rows = inproc["steps"]
    best = max(rows, key=lambda r: r["images_per_s"])
    bs1 = next((r for r in rows if r["batch_size"] == 1), None)
    decode = inproc.get("decode") or {}
    lines.append(
        f"in-process {inproc['model']} ({inproc['backend']} {inproc['precision']}): best "
        f"{best['images_per_s']:.1f} img/s at batch {best['batch_size']}"
        + (f"; batch 1: {bs1['p50_ms']:.2f} ms" if bs1 else "")
        + (f"; decode {decode['p50_ms']:.2f} ms/image (p50, one core)" if decode else "")
    )
    steps = served["steps"]
    top = max(steps, key=lambda s: s["images_per_s"])
    lines.append(
        f"served best: {top['images_per_s']:.1f} img/s at {top['label']} = "
        f"{100 * top['images_per_s'] / best['images_per_s']:.0f}% of in-process best "
        f"(target: >= 120 img/s and >= 70%)"
    )
    c1 = next((s for s in steps if s["concurrency"] == 1 and s["p50_ms"] is not None), None)
    if c1 and bs1:
        floor = bs1["p50_ms"] + decode.get("p50_ms", 0.0)
        lines.append(
            f"concurrency 1: p50 {c1['p50_ms']:.2f} ms vs backend batch 1 + decode "
            f"{floor:.2f} ms -> overhead {c1['p50_ms'] - floor:+.2f} ms (target <= 5 ms)"
        )
    for s in steps:
        wrk = read(args.results / f"c{s['concurrency']}.wrk.json")
        if wrk:
            ratio = s["images_per_s"] / wrk["ok_per_s"] if wrk["ok_per_s"] else float("nan")
            lines.append(
                f"c={s['concurrency']}: bench client {s['images_per_s']:.1f} img/s p50 "
                f"{s['p50_ms']:.1f} p99 {s['p99_ms']:.1f} ms; wrk {wrk['ok_per_s']:.1f} req/s "
                f"p50 {wrk['p50_ms']:.1f} p99 {wrk['p99_ms']:.1f} ms; ratio {ratio:.2f}"
            )
    if open_:
        peak = open_.get("peak_requests_per_s")
        for s in open_["steps"]:
            frac = f" ({100 * s['rate'] / peak:.0f}% of peak {peak:.1f}/s)" if peak else ""
            lines.append(
                f"open loop {s['label']}{frac}, offered {s['offered_per_s']:.1f}/s "
                f"({s['requests']} requests): {s['images_per_s']:.1f} img/s, p50 "
                f"{s['p50_ms'] or float('nan'):.1f} ms, p99 {s['p99_ms'] or float('nan'):.1f} ms, "
                f"errors {s['errors'] or 'none'}"
            )
    text = "\n".join(lines)
    print(text)
    (args.results / "summary.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
