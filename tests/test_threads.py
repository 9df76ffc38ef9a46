"""Thread budgets (app/threads.py): defaults derived from the usable cores and the device,
every figure overridden by config.json, and the budget in force reported by a served model."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from app import threads
from app.config import ModelConfig, Settings, read_model_config
from app.main import create_app
from tests.conftest import app_client


def cfg(**kw: object) -> ModelConfig:
    return ModelConfig.model_validate({"name": "m", **kw})


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert threads.cgroup_cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpu_quota(tmp_path) is None


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    v1 = tmp_path / "cpu,cpuacct"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_cpu_quota(tmp_path) == 3.0
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert threads.cgroup_cpu_quota(tmp_path) is None
    assert threads.cgroup_cpu_quota(tmp_path / "nothing-here") is None


def test_usable_cores_is_the_smaller_of_affinity_and_quota(tmp_path: Path) -> None:
    import os

    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU: one core's worth
    cores = threads.usable_cores(tmp_path)
    assert cores.usable == 1 and cores.affinity == affinity and cores.cgroup_quota == 0.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.usable_cores(tmp_path).usable == affinity


@pytest.mark.parametrize(
    ("cores", "instances", "per_instance"),
    [(1, 1, 1), (2, 2, 1), (4, 2, 2), (16, 2, 8), (32, 4, 8), (64, 8, 8)],
)
def test_cpu_rule(cores: int, instances: int, per_instance: int) -> None:
    for backend in ("onnxruntime", "openvino", "torchscript", "eager"):
        b = threads.plan(cfg(backend=backend), cores)
        assert (b.instances, b.inference_threads) == (instances, per_instance)
        assert b.instances * b.inference_threads <= cores  # never oversubscribed
        assert b.source["instances"] == b.source["inference_threads"] == "budget"


def test_workers_share_the_cores() -> None:
    b = threads.plan(cfg(), cores=8, workers=2)
    assert b.cores == 4 and (b.instances, b.inference_threads) == (2, 2)
    assert threads.decode_pool_size(0, [cfg()], cores=8, workers=2) == 1


def test_gpu_rule() -> None:
    b = threads.plan(cfg(device="cuda:0"), cores=16)
    assert (b.instances, b.inference_threads) == (1, 1)
    assert threads.decode_pool_size(0, [cfg(device="cuda:0")], cores=16, workers=1) == 16
    assert threads.decode_pool_size(0, [cfg(device="cuda:0"), cfg()], cores=16, workers=1) == 4


def test_config_json_wins() -> None:
    c = cfg(batching={"instances": 3}, onnxruntime={"intra_op_threads": 5})
    b = threads.plan(c, cores=2)
    assert (b.instances, b.inference_threads) == (3, 5)
    assert b.source["instances"] == b.source["inference_threads"] == "config"
    only_instances = threads.plan(cfg(batching={"instances": 1}), cores=4)
    assert (only_instances.instances, only_instances.inference_threads) == (1, 4)
    torch_threads = threads.plan(cfg(backend="eager", torch={"threads": 3}), cores=8)
    assert torch_threads.inference_threads == 3
    assert threads.decode_pool_size(7, [cfg()], cores=2, workers=1) == 7


def test_unknown_backends_keep_their_thread_default() -> None:
    b = threads.plan(cfg(backend="fake"), cores=4)
    assert b.instances == 2 and b.inference_threads == 0
    applied = threads.apply(cfg(backend="fake"), b)
    assert applied.batching.instances == 2 and applied.onnxruntime.intra_op_threads == 0


def test_apply_fills_the_backend_option() -> None:
    base = cfg(backend="openvino")
    applied = threads.apply(base, threads.plan(base, cores=4))
    assert applied.batching.instances == 2 and applied.openvino.threads == 2
    assert base.batching.instances == 0 and base.openvino.threads == 0  # not modified
    ort = cfg()
    assert threads.apply(ort, threads.plan(ort, 2)).onnxruntime.intra_op_threads == 1


async def test_served_model_reports_its_budget_and_the_log_states_it(
    resnet18_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copytree(resnet18_dir, tmp_path / "r18")
    base = read_model_config(tmp_path / "r18")
    explicit = base.variant("explicit", batching={"instances": 1, "max_batch_size": 2})
    auto = base.variant("auto", batching={"instances": 0, "max_batch_size": 2})
    cores = threads.usable_cores()
    with caplog.at_level(logging.INFO):  # app.threads: process; app.repository.instances: model
        app = create_app(Settings(), configs=[auto, explicit])
        async with app_client(app) as client:
            models = {m["name"]: m for m in (await client.get("/v1/models")).json()["models"]}
            r = await client.get("/v2/models/auto/config")
    a, e = models["auto"], models["explicit"]
    want = threads.cpu_instances(cores.usable)
    assert a["batching"]["instances"] == want and len(a["instance_devices"]) == want
    assert a["threads"]["instances"] == want and a["threads"]["source"]["instances"] == "budget"
    assert a["threads"]["inference_threads"] == max(1, cores.usable // want)
    assert a["threads"]["decode_threads"] == max(1, cores.usable // 4)
    assert e["batching"]["instances"] == 1 and e["threads"]["source"]["instances"] == "config"
    assert r.status_code == 200 and r.json()["instance_group"][0]["count"] == want
    assert f"thread budget: {cores.usable} usable cores" in caplog.text
    assert "model auto:" in caplog.text and "(budget)" in caplog.text
