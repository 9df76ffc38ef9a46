"""Instance placement over GPUs, checked with a fake device count (no GPU needed)."""

from __future__ import annotations

import pytest

from app.api.http.models import describe
from app.config import ModelConfig
from app.metrics import Metrics
from app.placement import instance_configs, instance_devices
from app.repository import ModelRepository
from tests.fakes import fake_config


def cfg(instances: int, **kw: object) -> ModelConfig:
    return ModelConfig.model_validate({"name": "m", "batching": {"instances": instances}, **kw})


def test_every_instance_on_the_one_device_by_default() -> None:
    assert instance_devices(cfg(3)) == ["cpu"] * 3
    assert instance_devices(cfg(2, device="cuda:1")) == ["cuda:1", "cuda:1"]


def test_round_robin_over_a_list() -> None:
    c = cfg(5, device="cuda", devices=["cuda:1", "cuda:0"])
    assert instance_devices(c) == ["cuda:1", "cuda:0", "cuda:1", "cuda:0", "cuda:1"]


def test_all_visible_gpus() -> None:
    c = cfg(4, device="cuda", devices="all")
    assert instance_devices(c, lambda: 3) == ["cuda:0", "cuda:1", "cuda:2", "cuda:0"]
    assert instance_devices(c, lambda: 8) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    with pytest.raises(RuntimeError, match="no CUDA device is visible"):
        instance_devices(c, lambda: 0)


def test_reduce_overhead_runs_in_one_instance_per_process() -> None:
    """CUDA graph trees assume one thread; each instance runs on its own: refused at load,
    with the way out, instead of a failed first batch (torch 2.11)."""
    ro = {"compile": True, "compile_mode": "reduce-overhead"}
    assert instance_devices(cfg(1, device="cuda", backend="eager", torch=ro)) == ["cuda:0"]
    with pytest.raises(RuntimeError, match="reduce-overhead.*2 instances.*--workers"):
        instance_devices(cfg(2, device="cuda", backend="eager", torch=ro))
    with pytest.raises(RuntimeError, match="2 instances"):  # one per GPU is still two threads
        instance_devices(cfg(2, device="cuda", devices="all", backend="eager", torch=ro), lambda: 2)
    default = {"compile": True, "compile_mode": "default"}
    assert len(instance_devices(cfg(4, device="cuda", backend="eager", torch=default))) == 4


def test_each_instance_config_names_its_device_and_keeps_the_rest() -> None:
    c = cfg(3, device="cuda", devices="all", backend="eager", torch={"compile": True})
    configs = instance_configs(c, lambda: 2)
    assert [x.device for x in configs] == ["cuda:0", "cuda:1", "cuda:0"]
    assert configs[0] is c and all(x.torch.compile for x in configs)


def test_gpu_decoding_stays_on_one_gpu_per_process() -> None:
    c = cfg(3, device="cuda:1", devices="all", backend="eager", input={"decode": "gpu"})
    assert instance_devices(c, lambda: 1) == ["cuda:0"] * 3
    with pytest.raises(RuntimeError, match="one server per GPU"):
        instance_devices(c, lambda: 2)
    with pytest.raises(ValueError, match="one server per GPU"):
        cfg(2, device="cuda", devices=["cuda:0", "cuda:1"], input={"decode": "gpu"})
    assert instance_devices(cfg(2, device="cuda", devices=["cuda:1"], input={"decode": "gpu"})) == [
        "cuda:1",
        "cuda:1",
    ]


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"devices": ["cuda:0"]}, "set device to 'cuda'"),
        ({"device": "cuda", "devices": ["cpu"]}, "CUDA devices"),
        ({"device": "cuda", "devices": ["cuda:0", "cuda"]}, "twice"),
        ({"device": "cuda", "devices": "some"}, "valid list"),
        ({"device": "cuda", "devices": ["gpu1"]}, "'cpu' or 'cuda:N'"),
    ],
)
def test_bad_devices_are_refused(kw: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        cfg(2, **kw)


async def test_repository_loads_one_instance_per_placed_device() -> None:
    c = fake_config("fake", device="cuda", devices=["cuda:0", "cuda:1"], batching={"instances": 3})
    repo = ModelRepository([c], Metrics())
    await repo.load_all()
    model = repo.get("fake")
    assert model.ready
    assert [b.config.device for b in model.backends] == ["cuda:0", "cuda:1", "cuda:0"]
    assert describe(model)["instance_devices"] == ["cuda:0", "cuda:1", "cuda:0"]
    await repo.close()
