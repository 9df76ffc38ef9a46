"""benchmarks/wrk_post_image.lua under a real wrk (skipped where wrk is not installed)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed"),
]
SCRIPT = ROOT / "benchmarks" / "wrk_post_image.lua"


def run_wrk(url: str, images: list[Path]) -> dict:
    cmd = [
        "wrk",
        "-t2",
        "-c2",
        "-d1s",
        "--latency",
        "-s",
        str(SCRIPT),
        url,
        "--",
        *map(str, images),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr + result.stdout
    line = next(x for x in result.stdout.splitlines() if x.startswith("WRK_JSON "))
    return json.loads(line.removeprefix("WRK_JSON "))


def test_lua_script_counts_non_2xx_across_threads(resnet18_server, image_dir: Path) -> None:
    server = resnet18_server  # shared: what is asserted is what wrk counted
    images = sorted(image_dir.glob("*.jpg"))[:2]

    ok = run_wrk(f"{server.url}/v1/models/resnet18/classify", images)
    assert ok["responses"] > 0 and ok["non2xx"] == 0 and ok["by_status"] == {}
    assert ok["p50_ms"] > 0

    # both threads' 404s are summed in done(), per status
    missing = run_wrk(f"{server.url}/v1/models/missing/classify", images)
    assert missing["responses"] > 2
    assert missing["non2xx"] == missing["responses"] == missing["by_status"]["404"]
