"""Triton's load generator, perf_analyzer, drives a real server over the V2 HTTP API.

Opt-in: runs where benchmarks/perf_analyzer.sh has built its Debian trixie root (perf_analyzer's
wheels need glibc 2.38); `benchmarks/perf_analyzer.sh --setup-only` builds it (root, a few
minutes). A short fixed request count, so no timing is asserted: only that perf_analyzer reads
the model's metadata and config, infers without an error and finds its requests in the stats.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT

ROOT_DIR = Path(os.environ.get("TRIXIE_ROOT", "/var/cache/resnet-serve/trixie"))
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (ROOT_DIR / "opt/pa/bin/perf_analyzer").exists() or os.geteuid() != 0,
        reason="perf_analyzer root not built (benchmarks/perf_analyzer.sh --setup-only, as root)",
    ),
]


def test_perf_analyzer_drives_the_server(models_repo: Path, start_server) -> None:
    server = start_server(models_repo)
    run = subprocess.run(
        [
            str(ROOT / "benchmarks/perf_analyzer.sh"),
            "-u",
            f"127.0.0.1:{server.port}",
            "-m",
            "resnet18",
            "-b",
            "2",
            "--concurrency-range",
            "2:2",
            "--request-count",
            "6",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert re.search(r"Concurrency: 2, throughput: [0-9.]+ infer/sec, latency \d+ usec", out), out
    assert "error" not in out.lower(), out
    stats = httpx.get(f"{server.url}/v2/models/resnet18/stats").json()["model_stats"][0]
    # perf_analyzer may send a few requests beyond its count while it stops its workers
    assert stats["inference_stats"]["success"]["count"] >= 6
    assert stats["inference_stats"]["fail"]["count"] == 0
    assert {b["batch_size"] for b in stats["batch_stats"]} <= {2, 4, 6, 8}
