"""`resnet-serve tune`'s search, without serving: the batching knobs of its third stage are the
ones that still matter for the scheduler the best configuration served with (issue 19)."""

from __future__ import annotations

from app.bench.tune import Trial, third_stage
from tests.fakes import fake_config


def served(scheduler: str) -> dict[str, object]:
    return {
        "threads": {"instances": 2, "inference_threads": 1},
        "scheduler": {"scheduler": scheduler},
    }


def test_adaptive_best_tries_the_static_scheduler_and_a_larger_bound() -> None:
    best = Trial("openvino", "int8", {}, served=served("adaptive"))
    knobs = [
        (t.scheduler, t.max_batch_size, t.max_queue_delay_ms, t.wide_max_batch)
        for t in third_stage(best)
    ]
    assert knobs == [
        ("static", 8, 0.0, 0),
        ("static", 4, 0.0, 0),
        ("adaptive", 16, 0.0, 0),
        ("adaptive", 8, 0.0, 8),  # the wide runner taking whole queues
    ]
    wide = third_stage(best)[-1]
    assert wide.model_overrides(fake_config("m"))["batching"]["wide_max_batch"] == 8
    assert wide.describe().endswith(" adaptive wide8") and wide.key != best.key
    assert all(t.instances == 2 and t.threads == 1 and t.stage == 3 for t in third_stage(best))


def test_static_best_searches_max_batch_size_and_queue_delay() -> None:
    best = Trial("torchscript", "fp32", {}, served=served("static"))
    knobs = [(t.max_batch_size, t.max_queue_delay_ms) for t in third_stage(best)]
    assert knobs == [(4, 0.0), (16, 0.0), (8, 2.0), (16, 5.0)]


def test_the_scheduler_is_part_of_the_variant_and_of_the_key() -> None:
    base = fake_config("m")
    static = Trial("onnxruntime", "int8", {}, instances=2, threads=1, scheduler="static")
    adaptive = Trial("onnxruntime", "int8", {}, instances=2, threads=1)
    assert static.model_overrides(base)["batching"]["scheduler"] == "static"
    assert adaptive.model_overrides(base)["batching"]["scheduler"] == "adaptive"
    assert static.key != adaptive.key
    assert static.describe().endswith(" static") and adaptive.describe().endswith(" adaptive")
