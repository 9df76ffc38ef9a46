"""One load step's record: every response's status and every success's latency."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def pct_key(p: float) -> str:
    return "p" + (f"{p:g}".replace(".", "_"))  # p50, p90, p99, p99_9


@dataclass
class Step:
    """Counts and latencies of one step (one concurrency, or one arrival rate)."""

    loop: str  # "closed" or "open"
    concurrency: int | None = None
    rate: float | None = None  # requests/s asked for (open loop)
    images_per_request: int = 1
    latencies: list[float] = field(default_factory=list)  # seconds, 2xx responses only
    errors: Counter[str] = field(default_factory=Counter)  # "404", "503", "timeout", "connect"
    error_samples: dict[str, str] = field(default_factory=dict)  # first body seen per error
    elapsed: float = 0.0  # seconds of the measured window
    late_s: float = 0.0  # open loop: largest lag of a send behind its scheduled time

    @property
    def label(self) -> str:
        if self.loop == "closed":
            return f"c={self.concurrency}"
        return f"r={self.rate:g}/s"

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def requests(self) -> int:
        return self.ok + self.failed

    def record_ok(self, latency: float) -> None:
        self.latencies.append(latency)

    def record_error(self, kind: str, sample: str | None = None) -> None:
        self.errors[kind] += 1
        if sample and kind not in self.error_samples:
            self.error_samples[kind] = sample[:300]

    def summary(self) -> dict[str, Any]:
        elapsed = self.elapsed if self.elapsed > 0 else float("nan")
        out: dict[str, Any] = {
            "label": self.label,
            "loop": self.loop,
            "concurrency": self.concurrency,
            "rate": self.rate,
            "images_per_request": self.images_per_request,
            "duration_s": round(self.elapsed, 3),
            "requests": self.requests,
            "ok": self.ok,
            "failed": self.failed,
            "requests_per_s": self.requests / elapsed,  # answered, any status
            "ok_per_s": self.ok / elapsed,
            "images_per_s": self.ok * self.images_per_request / elapsed,  # 2xx only
            "errors": dict(sorted(self.errors.items())),
            "error_samples": dict(sorted(self.error_samples.items())),
        }
        if self.loop == "open":
            out["offered_per_s"] = self.requests / elapsed
            out["max_send_lag_ms"] = round(self.late_s * 1000, 3)
        lat = np.asarray(self.latencies, dtype=np.float64) * 1000.0
        if lat.size:
            for p, v in zip(PERCENTILES, np.percentile(lat, PERCENTILES), strict=True):
                out[f"{pct_key(p)}_ms"] = float(v)
            out["mean_ms"] = float(lat.mean())
            out["min_ms"] = float(lat.min())
            out["max_ms"] = float(lat.max())
        else:
            for p in PERCENTILES:
                out[f"{pct_key(p)}_ms"] = None
            out["mean_ms"] = out["min_ms"] = out["max_ms"] = None
        return out
