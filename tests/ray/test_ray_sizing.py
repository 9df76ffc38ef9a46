"""The Serve side of resnet-serve without a cluster: the limits derived from the models'
batching, the `serve run` builder's arguments, the CLI (which must not import ray to parse)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.config import BatchingConfig, ModelConfig
from app.ray_serve.deployment import (
    RayOptions,
    deployment_options,
    options_from_args,
    replica_settings,
)
from app.ray_serve.sizing import replica_limits
from tests.ray.cluster import REPO


def _model(name: str, **batching: int) -> ModelConfig:
    return ModelConfig(name=name, files={"onnx": "m.onnx"}, batching=BatchingConfig(**batching))


def test_one_model_two_full_batches_per_instance():
    limits = replica_limits([_model("a", max_batch_size=8, instances=2, max_queue_size=128)])
    assert limits.max_ongoing_requests == 32  # 2 x 8 x 2
    assert limits.target_ongoing_requests == 16  # one full batch per instance in flight
    assert limits.per_model_capacity == {"a": 16 + 128}


def test_a_small_queue_caps_the_replica_so_the_batcher_never_answers_503():
    limits = replica_limits([_model("a", max_batch_size=32, instances=2, max_queue_size=4)])
    # 2 x 32 x 2 = 128 would overflow the batcher: 32 x 2 in flight + 4 waiting = 68
    assert limits.max_ongoing_requests == 68
    assert limits.target_ongoing_requests == 64


def test_several_models_add_up_but_each_must_hold_all_of_it():
    limits = replica_limits(
        [
            _model("a", max_batch_size=8, instances=1, max_queue_size=128),
            _model("b", max_batch_size=4, instances=1, max_queue_size=10),
        ]
    )
    # 2 x (8 + 4) = 24, but all 24 may be for b, which holds 4 + 10 = 14
    assert limits.max_ongoing_requests == 14
    assert limits.target_ongoing_requests == 12


def test_no_model_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        replica_limits([])


def test_builder_arguments_parse_like_the_cli():
    opts = options_from_args(
        {
            "models": "/m",
            "autoscale": "1:4",
            "num_cpus": "2",
            "num_gpus": 1,
            "resources": '{"slot": 1}',
            "settings": {"request_timeout_ms": 5000},
            "metrics_port": "9300",
        }
    )
    assert opts.models_dir == Path("/m") and opts.autoscale == (1, 4)
    assert opts.num_cpus == 2.0 and opts.num_gpus == 1.0 and opts.resources == {"slot": 1}
    assert opts.settings == {"request_timeout_ms": 5000} and opts.metrics_port == 9300
    with pytest.raises(ValueError, match="unknown arguments"):
        options_from_args({"replicaz": "2"})


def test_replica_settings_travel_as_json_and_size_decode_threads_to_the_replica(tmp_path):
    dumped = replica_settings(
        RayOptions(models_dir=tmp_path, num_cpus=3, settings={"max_top_k": 7})
    )
    assert dumped["models_dir"] == str(tmp_path) and dumped["max_top_k"] == 7
    assert dumped["decode_threads"] == 3
    assert "port" not in dumped and "workers" not in dumped


def test_replicas_serve_no_grpc_unless_asked(tmp_path, monkeypatch):
    """Every replica on a node bound gRPC's default 127.0.0.1:8001: the second one failed its
    start-up ("cannot serve gRPC") and Serve retried it forever. Serve's proxy is HTTP only."""
    monkeypatch.delenv("RESNET_SERVE_GRPC_PORT", raising=False)
    assert replica_settings(RayOptions(models_dir=tmp_path))["grpc_port"] == 0
    asked = RayOptions(models_dir=tmp_path, settings={"grpc_port": "9001"})
    assert replica_settings(asked)["grpc_port"] == 9001
    monkeypatch.setenv("RESNET_SERVE_GRPC_PORT", "9002")
    assert replica_settings(RayOptions(models_dir=tmp_path))["grpc_port"] == 9002


def test_cli_parses_without_importing_ray():
    code = (
        "import sys; from app.cli import build_parser; "
        "a = build_parser().parse_args(['ray', '--models', 'm', '--autoscale', '2:5']); "
        "assert a.autoscale == (2, 5), a; assert 'ray' not in sys.modules; print('ok')"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "app.cli", "ray", "--models", "m", "--autoscale", "5:2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "MIN:MAX" in bad.stderr


def test_deployment_options_fixed_and_autoscaled(tmp_path):
    configs = [_model("a", max_batch_size=8, instances=1, max_queue_size=128)]
    fixed = RayOptions(models_dir=tmp_path, replicas=3, num_cpus=2, resources={"slot": 1})
    opts, _ = deployment_options(fixed, configs, replica_settings(fixed))
    assert opts["num_replicas"] == 3 and "autoscaling_config" not in opts
    assert opts["ray_actor_options"] == {"num_cpus": 2, "num_gpus": 0.0, "resources": {"slot": 1}}
    assert opts["max_ongoing_requests"] == 16 and opts["max_queued_requests"] == 128
    assert opts["backpressure_config"] == {"status_code": 503, "retry_after_s": 1}
    scaled = RayOptions(models_dir=tmp_path, autoscale=(1, 4), max_ongoing_requests=10)
    opts, _ = deployment_options(scaled, configs, replica_settings(scaled))
    assert "num_replicas" not in opts and opts["max_ongoing_requests"] == 10
    auto = opts["autoscaling_config"]
    assert (auto["min_replicas"], auto["max_replicas"], auto["target_ongoing_requests"]) == (
        1,
        4,
        8,
    )


def test_instances_left_to_the_thread_budget_are_planned_for_the_replica_cpus():
    """instances 0 (the default): the replica's server plans them from its CPUs (app/threads.py),
    so Serve's limit must count them too, never 0."""
    model = _model("a", max_batch_size=8, instances=0, max_queue_size=128)
    one_cpu, four_cpus = replica_limits([model], cores=1), replica_limits([model], cores=4)
    assert one_cpu.max_ongoing_requests == 2 * 8 * 1
    assert four_cpus.max_ongoing_requests == 2 * 8 * 2  # the budget: 2 instances on 4 cores


def test_ray_serve_imports_beside_the_pinned_protobuf():
    """grpcio-reflection 1.84+ is generated for protobuf 7 and ray.serve imports it: beside
    protobuf 6 (pinned for tritonclient) `import ray.serve` failed with a VersionError, so
    `resnet-serve ray` could not start. The ray extra pins grpcio-reflection 1.81.1."""
    pytest.importorskip("ray", reason="pip install -e '.[ray]'")
    r = subprocess.run(
        [sys.executable, "-c", "from ray import serve; print(serve.deployment.__name__)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and "deployment" in r.stdout, r.stderr[-2000:]


async def test_a_replica_plans_its_threads_for_its_num_cpus(tmp_path):
    """The replica's thread budget (instances, inference and decode threads) is its num_cpus,
    as Serve's limits are sized, not every core of the node it shares with other replicas."""
    import logging

    from app import threads
    from app.ray_serve.deployment import ResnetServeReplica
    from tests.conftest import app_client
    from tests.fakes import fake_config

    (tmp_path / "fake").mkdir()
    fake_config("fake").write(tmp_path / "fake")
    options = RayOptions(models_dir=tmp_path, num_cpus=0.5)
    app_log = logging.getLogger("app")
    handlers = list(app_log.handlers)
    try:
        replica = ResnetServeReplica(replica_settings(options), cores=1)
        async with app_client(replica.__serve_build_asgi_app__()) as client:
            (model,) = (await client.get("/v1/models")).json()["models"]
    finally:
        app_log.handlers = handlers
    assert model["threads"]["cores"] == 1, model["threads"]
    assert model["batching"]["instances"] == threads.cpu_instances(1) == 1
    limits = replica_limits([fake_config("fake")], 1)
    assert limits.max_ongoing_requests == 2 * model["batching"]["max_batch_size"]
