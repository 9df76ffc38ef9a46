"""Side-by-side table (and plot) of the systems measured in one sitting.

Reads a results folder written by torchserve_compare.sh:
  <system>__c<N>.r<R>.json       `resnet-serve bench` output (one closed-loop step, round R)
  <system>__c<N>.r<R>.wrk.json   wrk's WRK_JSON line (benchmarks/wrk_post_image.lua), if wrk ran
Over several rounds, each figure is the median of the rounds (errors are summed).

    python benchmarks/compare_table.py RESULTS_DIR [--baseline-prefix torchserve]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

NAME = re.compile(r"^(?P<system>.+)__c(?P<c>\d+)(?:\.r(?P<round>\d+))?(?P<wrk>\.wrk)?\.json$")


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def merge_rounds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["system"], r["client"], r["concurrency"]), []).append(r)
    merged = []
    for (system, client, c), rs in groups.items():
        errors: dict[str, int] = {}
        for r in rs:
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
        merged.append(
            {
                "system": system,
                "client": client,
                "concurrency": c,
                "rounds": len(rs),
                "images_per_s": median([r["images_per_s"] for r in rs]) or 0.0,
                "p50_ms": median([r["p50_ms"] for r in rs]),
                "p99_ms": median([r["p99_ms"] for r in rs]),
                "images_per_s_each": [round(r["images_per_s"], 2) for r in rs],
                "errors": errors,
            }
        )
    return merged


def load(folder: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(folder.iterdir()):
        m = NAME.match(path.name)
        if not m:
            continue
        doc = json.loads(path.read_text())
        c = int(m["c"])
        if m["wrk"]:
            rows.append(
                {
                    "system": m["system"],
                    "client": "wrk",
                    "concurrency": c,
                    "images_per_s": doc["ok_per_s"],
                    "p50_ms": doc["p50_ms"],
                    "p99_ms": doc["p99_ms"],
                    "errors": {
                        **doc["by_status"],
                        **{k: v for k, v in doc["socket_errors"].items() if v},
                    },
                }
            )
        else:
            for s in doc["steps"]:
                rows.append(
                    {
                        "system": m["system"],
                        "client": "bench",
                        "concurrency": s["concurrency"] or c,
                        "images_per_s": s["images_per_s"],
                        "p50_ms": s["p50_ms"],
                        "p99_ms": s["p99_ms"],
                        "p99_9_ms": s.get("p99_9_ms"),
                        "errors": s["errors"],
                    }
                )
    return merge_rounds(rows)


def fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        f"{'conc':>5}  {'system':<22}{'client':<7}{'img/s':>8}{'p50 ms':>9}{'p99 ms':>9}"
        f"  {'img/s each round':<20}errors"
    ]
    for r in sorted(rows, key=lambda r: (r["concurrency"], r["system"], r["client"])):
        errors = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "none"
        out.append(
            f"{r['concurrency']:>5}  {r['system']:<22}{r['client']:<7}"
            f"{fmt(r['images_per_s']):>8}{fmt(r['p50_ms']):>9}{fmt(r['p99_ms']):>9}"
            f"  {' '.join(map(str, r['images_per_s_each'])):<20}{errors}"
        )
    return "\n".join(out)


def best(
    rows: list[dict[str, Any]], system_prefix: str, exact: bool = False
) -> dict[str, Any] | None:
    """The bench-client row with the most img/s of one system (exact) or a family (prefix:
    torchserve-b1, torchserve-b8, ...)."""
    mine = [
        r
        for r in rows
        if (r["system"] == system_prefix if exact else r["system"].startswith(system_prefix))
        and r["client"] == "bench"
    ]
    return max(mine, key=lambda r: r["images_per_s"], default=None)


def verdict(rows: list[dict[str, Any]], baseline: str) -> str:
    lines = []
    base = best(rows, baseline)
    if base is None:
        return f"no {baseline} results"
    lines.append(
        f"{baseline} at its best: {base['system']} c={base['concurrency']}: "
        f"{base['images_per_s']:.1f} img/s, p99 {fmt(base['p99_ms'])} ms"
    )
    others = sorted({r["system"] for r in rows if not r["system"].startswith(baseline)})
    for system in others:
        top = best(rows, system, exact=True)  # resnet50 must not pick resnet50-int8's rows
        if top is None:
            continue
        ratio = (
            f"{top['images_per_s'] / base['images_per_s']:.2f}x" if base["images_per_s"] else "n/a:"
        )
        lines.append(
            f"{system} at its best: c={top['concurrency']}: {top['images_per_s']:.1f} img/s, "
            f"p99 {fmt(top['p99_ms'])} ms -> {ratio} {baseline}'s throughput"
        )
        for c in sorted({r["concurrency"] for r in rows}):
            mine = [
                r
                for r in rows
                if r["system"] == system and r["client"] == "bench" and r["concurrency"] == c
            ]
            theirs = [
                r
                for r in rows
                if r["system"].startswith(baseline)
                and r["client"] == "bench"
                and r["concurrency"] == c
            ]
            if mine and theirs:
                t = max(theirs, key=lambda r: r["images_per_s"])
                m = mine[0]
                x = (
                    f"{m['images_per_s'] / t['images_per_s']:.2f}x"
                    if t["images_per_s"]
                    else "baseline answered nothing"
                )
                lines.append(
                    f"  c={c}: {m['images_per_s']:.1f} vs {t['images_per_s']:.1f} img/s ({x}), "
                    f"p99 {fmt(m['p99_ms'])} vs {fmt(t['p99_ms'])} ms"
                )
    for system in sorted({r["system"] for r in rows}):
        pairs = []
        for c in sorted({r["concurrency"] for r in rows}):
            b = [
                r
                for r in rows
                if r["system"] == system and r["concurrency"] == c and r["client"] == "bench"
            ]
            w = [
                r
                for r in rows
                if r["system"] == system and r["concurrency"] == c and r["client"] == "wrk"
            ]
            if b and w and w[0]["images_per_s"]:
                pairs.append(f"c={c} {b[0]['images_per_s'] / w[0]['images_per_s']:.2f}")
        if pairs:
            lines.append(f"bench client / wrk throughput on {system}: {', '.join(pairs)}")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for system in sorted({r["system"] for r in rows}):
        pts = sorted(
            (
                r
                for r in rows
                if r["system"] == system and r["client"] == "bench" and r["p99_ms"] is not None
            ),
            key=lambda r: r["concurrency"],
        )
        if not pts:
            continue
        (line,) = ax.plot(
            [r["images_per_s"] for r in pts],
            [r["p99_ms"] for r in pts],
            "o--",
            label=f"{system} p99",
        )
        ax.plot(
            [r["images_per_s"] for r in pts],
            [r["p50_ms"] for r in pts],
            "o-",
            color=line.get_color(),
            label=f"{system} p50",
        )
        for r in pts:
            ax.annotate(
                f"c={r['concurrency']}",
                (r["images_per_s"], r["p99_ms"]),
                fontsize=8,
                textcoords="offset points",
                xytext=(4, 4),
            )
    ax.set_xlabel("achieved throughput (images/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("closed loop, one JPEG per request, same machine, one sitting", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("results", type=Path)
    p.add_argument("--baseline-prefix", default="torchserve")
    args = p.parse_args(argv)
    rows = load(args.results)
    if not rows:
        print(f"no results in {args.results}", file=sys.stderr)
        return 1
    text = table(rows) + "\n\n" + verdict(rows, args.baseline_prefix)
    print(text)
    (args.results / "comparison.txt").write_text(text + "\n")
    (args.results / "comparison.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot(rows, args.results / "comparison.png")
    print(f"\nwrote {args.results / 'comparison.txt'}, comparison.json, comparison.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
