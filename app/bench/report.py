"""What a bench run shows: a table per step, a JSON file, a latency-against-throughput plot."""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Any

# req/s counts every answer (any status); img/s counts images in 2xx answers only.
HEADER = (
    f"{'step':<12}{'requests':>9}{'ok':>8}{'req/s':>9}{'img/s':>9}"
    f"{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}  errors"
)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in errors.items()) or "none"


def table_row(s: dict[str, Any]) -> str:
    return (
        f"{s['label']:<12}{s['requests']:>9}{s['ok']:>8}{s['requests_per_s']:>9.1f}"
        f"{s['images_per_s']:>9.1f}{_ms(s['p50_ms']):>9}{_ms(s['p90_ms']):>9}"
        f"{_ms(s['p99_ms']):>9}{_ms(s['p99_9_ms']):>10}  {format_errors(s['errors'])}"
    )


def format_table(summaries: list[dict[str, Any]]) -> str:
    return "\n".join([HEADER, *(table_row(s) for s in summaries)])


def format_error_samples(summary: dict[str, Any]) -> str:
    return "\n".join(f"  {k}: {v.strip()}" for k, v in summary["error_samples"].items())


def machine() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "processor": _cpu_model(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def write_json(path: Path, meta: dict[str, Any], summaries: list[dict[str, Any]]) -> None:
    doc = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        **meta,
        "steps": summaries,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, allow_nan=False, default=_nan_safe) + "\n")


def _nan_safe(value: Any) -> Any:  # pragma: no cover - json calls this only for odd types
    return str(value)


def clean(summary: dict[str, Any]) -> dict[str, Any]:
    """NaN (no measured window) -> None, so the JSON stays standard."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in summary.items()}


def plot(path: Path, summaries: list[dict[str, Any]], title: str) -> None:
    """p50 and p99 latency against achieved images/s, one line per loop kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for loop, marker, color in (("closed", "o", "tab:blue"), ("open", "s", "tab:red")):
        points = [s for s in summaries if s["loop"] == loop and s["p50_ms"] is not None]
        if not points:
            continue
        points.sort(key=lambda s: s["images_per_s"])
        x = [s["images_per_s"] for s in points]
        for key, style in (("p50_ms", "-"), ("p99_ms", "--")):
            ax.plot(
                x,
                [s[key] for s in points],
                style,
                marker=marker,
                color=color,
                label=f"{loop} loop {key.split('_')[0]}",
            )
        for s in points:
            ax.annotate(
                s["label"],
                (s["images_per_s"], s["p99_ms"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
            )
    ax.set_xlabel("achieved throughput (images/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title, fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no successful request", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def format_inprocess(rows: list[dict[str, Any]]) -> str:
    """Per batch size; the minimum shows what an uncontended CPU can do on a shared machine."""
    lines = [
        f"{'batch':>6}{'iters':>7}{'ms/batch p50':>14}{'p90':>9}{'min':>9}"
        f"{'ms/image':>10}{'img/s':>9}{'img/s best':>12}"
    ]
    for r in rows:
        lines.append(
            f"{r['batch_size']:>6}{r['iterations']:>7}{r['p50_ms']:>14.2f}{r['p90_ms']:>9.2f}"
            f"{r['min_ms']:>9.2f}{r['ms_per_image']:>10.2f}{r['images_per_s']:>9.1f}"
            f"{1000 * r['batch_size'] / r['min_ms']:>12.1f}"
        )
    return "\n".join(lines)
