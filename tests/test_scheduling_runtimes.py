"""The adaptive scheduler on real runtimes (issue 19): ONNX Runtime and OpenVINO build their wide
runner at load, time every batch size and say so in the log and /v1/models; answers under mode
switches are bit for bit the single-request answer; the scheduler stays static, and says why,
where it cannot help or where the wide runner's answers differ."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from app.api.http.models import describe
from app.api.v2.schema import model_statistics
from app.backends import create_backend
from app.config import BatchingConfig, ModelConfig, read_model_config
from app.metrics import Metrics
from app.repository import ModelRepository
from app.repository.instances import build_schedule
from app.scheduling import BucketTimes
from app.threads import ThreadBudget
from tests.fakes import FakeBackend, fake_config
from tests.tiny_onnx import CROP, write_tiny_model

# times that make the scheduler switch often: a lone batch of up to 8 runs wide, queued work
# beyond it runs on the instances
NARROW = BucketTimes({1: 0.020, 2: 0.039, 4: 0.074, 8: 0.142})
WIDE = BucketTimes({1: 0.011, 2: 0.021, 4: 0.040, 8: 0.076})


def backends() -> list[str]:
    found = ["onnxruntime"]
    try:
        import openvino  # noqa: F401 - whether it is installed
    except ImportError:
        return found
    return [*found, "openvino"]


@pytest.mark.parametrize("backend", backends())
async def test_mode_switches_under_load_keep_every_answer(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = write_tiny_model(tmp_path / "tiny", 3, backend=backend)
    config = read_model_config(directory)
    # wide batches of every size (the default gives the wide runner lone images only): each
    # must answer as an instance does
    config = config.model_copy(
        update={"batching": config.batching.model_copy(update={"wide_max_batch": 8})}
    )
    repo = ModelRepository([config], Metrics(), cores=2)
    with caplog.at_level(logging.INFO, logger="app.repository.instances"):
        await repo.load_all()
    model = repo.get("tiny")
    assert model.ready, model.reason
    described = describe(model)["scheduler"]  # as GET /v1/models shows it
    assert described["scheduler"] == "adaptive", described["reason"]
    assert described["cores"] == 2 and described["wide_threads"] == 2
    assert described["wide_max_batch"] == 8
    assert set(described["bucket_ms"]["wide"]) == {1, 2, 4, 8}
    assert "scheduler: model tiny: adaptive over 2 cores" in caplog.text
    assert "ms per batch, by batch size: instance {1: " in caplog.text

    batcher = model.require_ready()
    batcher.retime(NARROW, WIDE, learn=False)
    rng = np.random.default_rng(7)
    pictures = rng.integers(0, 256, (40, CROP, CROP, 3), dtype=np.uint8)
    # the single-request answer: one image alone on one instance, as a static server gives it
    single = [model.backends[0].infer(pictures[i : i + 1]) for i in range(len(pictures))]

    async def ask(i: int) -> np.ndarray:
        return await batcher.submit(pictures[i : i + 1], time.monotonic() + 30)

    answers: list[tuple[int, np.ndarray]] = []
    for wave in range(6):  # a lone request, then a burst, then a lone request ...
        i = wave % len(pictures)
        answers.append((i, await ask(i)))
        burst = [(j % len(pictures)) for j in range(wave * 7, wave * 7 + 30)]
        answers += zip(burst, await asyncio.gather(*(ask(j) for j in burst)), strict=True)
    modes = model.telemetry.snapshot().modes
    stats = model_statistics(model)["scheduler"]  # as the V2 statistics show it
    assert stats["scheduler"] == "adaptive" and set(stats["modes"]) == {"narrow", "wide"}
    await repo.close()
    assert modes.get("wide", [0])[0] >= 6 and modes.get("narrow", [0])[0] >= 6, modes
    for i, got in answers:
        np.testing.assert_array_equal(got, single[i], err_msg=f"image {i}")
    assert batcher.max_cores_in_use <= 2


def config_entries(opts: object, keys: tuple[str, ...]) -> dict[str, str]:
    found = {}
    for key in keys:
        try:
            found[key] = opts.get_session_config_entry(key)  # type: ignore[attr-defined]
        except RuntimeError:  # not set
            pass
    return found


def test_wide_runner_configs(tmp_path: Path) -> None:
    import onnxruntime as ort

    from app.backends.onnxruntime import OnnxRuntimeBackend, session_options
    from app.backends.openvino import OpenVinoBackend

    cfg = read_model_config(write_tiny_model(tmp_path / "tiny", 1))
    wide = OnnxRuntimeBackend.wide_config(cfg, 4)
    assert wide is not None
    opts = session_options(ort, wide)
    # every core, spinning between operators, not between batches
    assert opts.intra_op_num_threads == 4
    entries = ("session.force_spinning_stop", "session.intra_op.allow_spinning")
    assert config_entries(opts, entries) == {"session.force_spinning_stop": "1"}
    assert config_entries(session_options(ort, cfg), entries) == {}
    latency = OpenVinoBackend.wide_config(cfg.variant("ov", backend="openvino"), 4)
    assert latency is not None
    assert (latency.openvino.performance_hint, latency.openvino.threads) == ("LATENCY", 4)
    gpu = cfg.variant("gpu", device="cuda:0")
    assert OnnxRuntimeBackend.wide_config(gpu, 4) is None


def budget(instances: int, threads: int) -> ThreadBudget:
    return ThreadBudget(instances * threads, 1, instances, threads, 1, {})


class DriftingWide(FakeBackend):
    """A wide runner whose logits are one ulp-ish away from the instances'."""

    name = "drifting"

    @classmethod
    def wide_config(cls, config: ModelConfig, threads: int) -> ModelConfig | None:
        return config.model_copy(update={"options": {"wide": True}})

    def infer(self, batch: np.ndarray) -> np.ndarray:
        out = super().infer(batch)
        return out + np.float32(1e-4) if self.config.options.get("wide") else out


def test_wide_answers_that_differ_keep_the_scheduler_static() -> None:
    from app.backends import REGISTRY

    REGISTRY["drifting"] = f"{__name__}:DriftingWide"
    cfg = fake_config("drift", backend="drifting", batching=BatchingConfig(instances=2))
    instances = [create_backend(cfg), create_backend(cfg)]
    executors = [ThreadPoolExecutor(1), ThreadPoolExecutor(1)]
    schedule, wide = build_schedule(cfg, budget(2, 1), instances, executors)
    for e in executors:
        e.shutdown()
    assert wide is None and not schedule.adaptive
    assert "answers differ from an instance's: batch of 1: logits differ by up to 0.0001" in (
        schedule.reason
    )
    assert schedule.describe()["scheduler"] == "static"


def test_static_where_the_wide_runner_cannot_help(tmp_path: Path) -> None:
    directory = write_tiny_model(tmp_path / "tiny", 1)
    base = read_model_config(directory)
    one = [create_backend(base)]
    executors = [ThreadPoolExecutor(1)]
    cases = {
        "batching.scheduler is static": (
            base.variant("s", batching={"scheduler": "static", "instances": 2}),
            budget(2, 1),
            one * 2,
        ),
        "one instance already holds all 2 cores": (base, budget(1, 2), one),
        "backend fake has no wide runner on cpu": (fake_config("f"), budget(2, 1), one * 2),
    }
    for reason, (cfg, plan, instances) in cases.items():
        schedule, wide = build_schedule(cfg, plan, instances, executors * len(instances))
        assert wide is None and schedule.reason == reason and not schedule.adaptive
    executors[0].shutdown()
