"""benchmarks/gpu_check.sh: its dry mode runs every step's plumbing on the CPU (pytest
collection, the decode and race check, the pipeline script, export + server + bench clients,
the table), and the report reads what the steps leave behind."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check_report  # noqa: E402 (benchmarks/ is not a package)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_report_reads_what_the_steps_leave(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "env.json").write_text(
        json.dumps({"gpus": ["NVIDIA H200"], "onnxruntime_gpu": "not installed"})
    )
    (tmp_path / "steps.tsv").write_text(
        "tests\t0\t40\t80\ndecode\t0\t20\t40\nserved\t124\t90\t90\n"
    )
    (tmp_path / "logs" / "dmon.log").write_text(
        "#Time        gpu     sm    mem    enc    dec    jpg    ofa\n"
        "#HH:MM:SS    Idx      %      %      %      %      %      %\n"
        " 12:00:01      0      5      1      0      0      0      0\n"
        " 12:00:02      0     40      9      0      0     63      0\n"
    )
    (tmp_path / "decode.json").write_text(
        json.dumps(
            {
                "decode": [
                    {
                        "batch": 128,
                        "decode_img_s": 20000.0,
                        "decode_crop_resize_img_s": 15000.0,
                        "resize_batched_img_s": 90000.0,
                        "resize_per_image_img_s": 9000.0,
                    }
                ],
                "race": {
                    "images": 16,
                    "size": [4000, 3000],
                    "chunks": 4,
                    "rounds": 3,
                    "mismatched_rounds": 1,
                    "ok": False,
                    "decode_crop_resize_img_s": 300.0,
                },
            }
        )
    )
    for c, (rate, p50, p99) in enumerate([(6000.0, 5.0, 30.0), (5000.0, 7.0, 60.0)], start=1):
        step = {"images_per_s": rate, "p50_ms": p50, "p99_ms": p99, "errors": {}}
        (tmp_path / f"served-jpeg-w8-c{c}.json").write_text(json.dumps({"steps": [step]}))
    assert gpu_check_report.main([str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "not installed" in text
    assert "used (jpg engine up to 63%)" in text
    assert "DIFFERS in 1 rounds" in text
    assert "resize batched/per-image x10.0" in text
    # two client processes: img/s add up, p50 is their median, p99 their maximum
    assert "11,000 img/s, p50 6.0 ms, p99 60.0 ms" in text and "below target" in text
    assert "cut at 90 s" in text  # the served step ran out of time
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["served"]["jpeg-w8"]["clients"] == 2


def _wheel_pins() -> dict[str, str]:
    """name -> version of the SERVER and CLIENT lists of benchmarks/gpu_wheels.sh."""
    text = (ROOT / "benchmarks" / "gpu_wheels.sh").read_text()
    pins: dict[str, str] = {}
    for block in re.findall(r"^(?:SERVER|CLIENT)=\((.*?)^\)", text, re.S | re.M):
        for line in block.splitlines():
            for token in line.split("#")[0].split():
                name, _, version = token.partition("==")
                pins[name.lower()] = version
    return pins


def test_gpu_wheels_bring_every_runtime_dependency_the_machine_lacks() -> None:
    """The GPU machine has torch, torchvision, Pillow, numpy, onnx and onnxruntime; every other
    dependency of the server must travel as a wheel, at pyproject's pin. (fastapi-offline and
    protobuf were missing: the server could not even import there.)"""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _wheel_pins()
    assert "fastapi" in pins and "pytest" in pins, pins
    on_the_machine = {"numpy", "pillow"}
    for dep in project["dependencies"]:
        name = re.split(r"[\[=<>!~; ]", dep, maxsplit=1)[0].lower()
        if name in on_the_machine:
            continue
        assert name in pins, f"{name} is a server dependency but not in gpu_wheels.sh"
        if "==" in dep:
            assert pins[name] == dep.split("==")[1].split(";")[0].strip(), dep


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(400)
def test_dry_run_checks_its_own_plumbing(tmp_path: Path) -> None:
    """About a minute on an idle CPU (several Python processes importing torch, a server).
    The default gRPC port (8001) is held busy meanwhile: the check's server must listen only
    on its own ports (PORT and PORT+1), and a server that never starts must fail its step."""
    held = socket.socket()
    try:
        held.bind(("127.0.0.1", 8001))
        held.listen()
    except OSError:
        pass  # already busy: the condition under test holds anyway
    out = tmp_path / "out"
    env = {
        **os.environ,
        "OUT": str(out),
        "WORK": str(tmp_path / "work"),
        "PYTHON": sys.executable,
        "PORT": str(free_port()),
        "PYTHONPATH": str(ROOT),
    }
    run = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=380,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "GPU check (DRY RUN" in run.stdout
    summary = json.loads((out / "gpu_check.json").read_text())
    assert {k: v["rc"] for k, v in summary["steps"].items()} == {
        "prepare": "0",
        "tests": "0",
        "decode": "0",
        "pipeline_eager": "0",
        "served": "0",
    }, run.stderr
    assert summary["decode"]["race"]["ok"] is True
    (eager,) = summary["pipeline"]["eager"]["results"]
    assert eager["pipeline_eager_x2"] > 0 and eager["pipeline_eager_2proc"] > 0
    assert set(summary["served"]) == {"jpeg-w1", "pixels32-w1"}
    assert all(s["images_per_s"] > 0 and s["errors"] == 0 for s in summary["served"].values())
    assert "tests collected" in summary["tests"]
    held.close()
    returned_within_the_device_limits(out)
    # the archive holds every step's JSON and log
    with tarfile.open(out / "gpu_check.tgz") as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {"decode.json", "pipeline_eager.json", "steps.tsv", "env.json"} <= names, names
    assert {"tests.log", "decode.log", "server-w1.log", "prepare.log"} <= names, names
    assert (out / "gpu_check.txt").read_text().startswith("\nGPU check (DRY RUN")


def returned_within_the_device_limits(out: Path) -> None:
    """What the device tool brings back from $OUT: at most 8 files of at most 16 MiB (64 MiB
    together), no deeper than two folders, names of letters, digits, '.', '_' and '-'. The
    check keeps three files there, far below: a larger or busier run must still fit."""
    files = [p for p in out.rglob("*") if p.is_file()]
    assert sorted(p.name for p in files) == ["gpu_check.json", "gpu_check.tgz", "gpu_check.txt"]
    assert all(p.stat().st_size < 4 * 2**20 for p in files), [p.stat().st_size for p in files]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", p.name) for p in files)
    assert all(len(p.relative_to(out).parts) <= 3 for p in files)
