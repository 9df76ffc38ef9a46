"""`resnet-serve tune` end to end on the trained digits model (tiny) with a 20 s budget: real
server subprocesses, the bench client, the table, the PNG, the variant written to config.json
(with a backup), and that variant then served by a real server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def tune(
    model: Path, images: Path, *extra: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "app.cli", "tune", str(model), "--images", str(images)]
    return subprocess.run([*cmd, *extra], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def repo(digits_dir: Path, tmp_path: Path) -> Path:
    import shutil

    out = tmp_path / "models"
    shutil.copytree(digits_dir, out / "digits")
    return out


def test_tune_writes_table_png_json_and_a_variant_that_serves(
    repo: Path, digits_images: dict[str, Path], start_server
) -> None:
    model = repo / "digits"
    before = json.loads((model / "config.json").read_text())
    started = time.monotonic()
    run = tune(
        model,
        digits_images["test"] / "3",
        "--budget", "20",
        "--step-s", "1",
        "--warmup-s", "0.3",
        "--concurrency", "1,4",
        "--p99-ms", "5000",
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "| # | stage | backend" in out and "poisson img/s" in out
    assert elapsed < 20 + 45, out  # the budget, plus the last trial's shutdown and start-up
    # the table lists at least one trial that ran, and what the budget skipped is said
    assert "| 1 " in out and "meets p99" in out
    report = json.loads((model / "tune-digits.json").read_text())
    assert report["trials"] and report["best"]["variant"] == "digits-tuned"
    first = report["trials"][0]
    assert first["poisson"]["ok"] > 0 and first["providers"]
    png = (model / "tune-digits.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    # the variant is added; everything the user had is kept, and backed up
    after = json.loads((model / "config.json").read_text())
    variant = after["variants"].pop("digits-tuned")
    assert after == {**before, "variants": before.get("variants", {})}
    backups = list(model.glob("config.json.*.bak"))
    assert len(backups) == 1 and json.loads(backups[0].read_text()) == before
    assert variant["backend"] == report["best"]["overrides"]["backend"]
    assert variant["batching"]["instances"] >= 1  # pinned, not left to the budget
    # the variant loads and serves
    server = start_server(repo)
    models = {m["name"]: m for m in httpx.get(f"{server.url}/v1/models").json()["models"]}
    tuned = models["digits-tuned"]
    assert tuned["ready"] and tuned["backend"] == variant["backend"]
    assert tuned["batching"]["max_batch_size"] == variant["batching"]["max_batch_size"]
    jpeg = next((digits_images["test"] / "3").iterdir()).read_bytes()
    r = httpx.post(
        f"{server.url}/v1/models/digits-tuned/classify",
        content=jpeg,
        headers={"Content-Type": "image/jpeg"},
    )
    assert r.status_code == 200 and r.json()["predictions"][0][0]["index"] == 3
    assert server.stop() == 0


def test_an_existing_variant_is_not_replaced_without_force(
    repo: Path, digits_images: dict[str, Path]
) -> None:
    model = repo / "digits"
    config = json.loads((model / "config.json").read_text())
    config["variants"] = {"digits-tuned": {"precision": "int8"}}
    (model / "config.json").write_text(json.dumps(config))
    before = (model / "config.json").read_text()
    run = tune(model, digits_images["test"] / "3", "--budget", "20", timeout=60)
    assert run.returncode == 2 and "already has a variant 'digits-tuned'" in run.stderr
    assert "--force" in run.stderr
    assert (model / "config.json").read_text() == before  # refused before any trial
    assert not list(model.glob("config.json.*.bak"))


def test_a_bound_no_configuration_meets_writes_nothing(
    repo: Path, digits_images: dict[str, Path]
) -> None:
    model = repo / "digits"
    before = (model / "config.json").read_text()
    run = tune(
        model,
        digits_images["test"] / "3",
        "--budget", "8",
        "--step-s", "0.5",
        "--warmup-s", "0.2",
        "--concurrency", "2",
        "--p99-ms", "0.001",
        "--backends", "onnxruntime",
    )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    assert "no configuration met p99 <= 0.001 ms" in run.stdout
    assert (model / "config.json").read_text() == before
    assert (model / "tune-digits.png").exists()
