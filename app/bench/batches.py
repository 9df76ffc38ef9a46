"""The batch sizes a server formed during one bench step: its Prometheus histogram
resnet_serve_batch_size{model} read before and after the step, the difference reported.

Buckets are cumulative (le="1", le="2", le="4", ...): the difference of two scrapes gives the
batches of the step per bucket, so "batches of size <= 4" and so on, with their mean size (from
_sum / _count). With several worker processes /metrics aggregates them all.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

METRIC = "resnet_serve_batch_size"


def scrape(url: str, model: str, headers: dict[str, str] | None = None) -> dict[str, float] | None:
    """{le: cumulative count, 'sum': ..., 'count': ...} of one model, or None when the server
    has no such histogram (another server, or /metrics protected)."""
    try:
        text = httpx.get(f"{url.rstrip('/')}/metrics", headers=headers, timeout=10.0).text
    except httpx.HTTPError:
        return None
    return parse(text, model)


def parse(text: str, model: str) -> dict[str, float] | None:
    """The histogram of `model` in a Prometheus text exposition, as scrape() returns it."""
    out: dict[str, float] = {}
    label = re.escape(f'model="{model}"')
    for match in re.finditer(
        rf'^{METRIC}_bucket\{{(?=[^}}]*{label})[^}}]*le="([^"]+)"[^}}]*\}} (\S+)$', text, re.M
    ):
        out[match.group(1)] = float(match.group(2))
    for part in ("sum", "count"):
        m = re.search(rf"^{METRIC}_{part}\{{[^}}]*{label}[^}}]*\}} (\S+)$", text, re.M)
        if m:
            out[part] = float(m.group(1))
    return out if "count" in out else None


def difference(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, Any]:
    """Batches of the step: count, mean size, and the share of batches in each bucket (not
    cumulative: le "8" holds the batches larger than the bucket below and at most 8)."""
    if not before or not after:
        return {}
    count = after["count"] - before.get("count", 0.0)
    if count <= 0:
        return {"batches": 0}
    bounds = sorted((k for k in after if k not in ("sum", "count")), key=_bound)
    shares: dict[str, float] = {}
    below = 0.0
    for le in bounds:
        cumulative = after[le] - before.get(le, 0.0)
        shares[le] = round((cumulative - below) / count, 4)
        below = cumulative
    images = after["sum"] - before.get("sum", 0.0)
    return {
        "batches": int(count),
        "images": int(round(images)),
        "mean_batch_size": round(images / count, 3),
        "share_by_le": shares,
    }


def _bound(le: str) -> float:
    return float("inf") if le == "+Inf" else float(le)


def format_histogram(hist: dict[str, Any]) -> str:
    if not hist.get("batches"):
        return "  batch sizes: (no batch, or no resnet_serve_batch_size metric)"
    parts = []
    previous = 0.0
    for le, share in hist["share_by_le"].items():
        if le == "+Inf":
            label = f">{previous:g}"
        elif _bound(le) - previous <= 1:
            label = f"{_bound(le):g}"
        else:
            label = f"{previous + 1:g}-{_bound(le):g}"
        if share > 0:
            parts.append(f"{label}: {share:.0%}")
        previous = _bound(le)
    return (
        f"  batch sizes: {hist['batches']} batches, mean {hist['mean_batch_size']:.2f}; "
        + ", ".join(parts)
    )
