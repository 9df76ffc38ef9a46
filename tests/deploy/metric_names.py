"""The metric names resnet-serve exports (the contract) and helpers to find names in PromQL."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

HISTOGRAMS = {
    "resnet_serve_request_duration_seconds",
    "resnet_serve_queue_wait_seconds",
    "resnet_serve_preprocess_duration_seconds",
    "resnet_serve_inference_duration_seconds",
    "resnet_serve_batch_size",
}
COUNTERS = {
    "resnet_serve_batches_total",
    "resnet_serve_requests_total",
    "resnet_serve_images_total",
    "resnet_serve_inference_failures_total",
    "resnet_serve_rejected_total",
}
GAUGES = {
    "resnet_serve_queue_depth",
    "resnet_serve_requests_in_flight",
    "resnet_serve_model_ready",
    "resnet_serve_model_info",
}


def series_names(histograms: set[str], counters: set[str], gauges: set[str]) -> set[str]:
    """Every series name a scrape can hold for these metric families."""
    names = set(gauges) | set(counters)
    for h in histograms:
        names |= {f"{h}_bucket", f"{h}_sum", f"{h}_count"}
    return names


CONTRACT_SERIES = series_names(HISTOGRAMS, COUNTERS, GAUGES)

_NAME = re.compile(r"\b(resnet_serve_[a-z0-9_]+)\b")


def names_in(expr: str) -> set[str]:
    return set(_NAME.findall(expr))


def dashboard_exprs(path: Path) -> list[str]:
    dash = json.loads(path.read_text())
    exprs: list[str] = []

    def walk(panels):
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
            walk(p.get("panels", []))

    walk(dash["panels"])
    for var in dash.get("templating", {}).get("list", []):
        q = var.get("query")
        exprs.append(q["query"] if isinstance(q, dict) else q or "")
    return exprs


def rule_exprs(path: Path) -> list[str]:
    doc = yaml.safe_load(path.read_text())
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


def exported_series(metrics_text: str) -> set[str]:
    """Series names a real /metrics page declares (families with no samples yet included)."""
    from prometheus_client.parser import text_string_to_metric_families

    h, c, g = set(), set(), set()
    for fam in text_string_to_metric_families(metrics_text):
        if fam.type == "histogram":
            h.add(fam.name)
        elif fam.type == "counter":
            c.add(fam.name + "_total")
        else:
            g.add(fam.name)
    return series_names(h, c, g)
