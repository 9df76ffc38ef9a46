"""The batch-size histogram difference, on the text the server's own Metrics registry writes."""

from __future__ import annotations

from prometheus_client import generate_latest

from app.bench import batches
from app.metrics import Metrics


def test_difference_of_two_scrapes_gives_the_step_batches() -> None:
    metrics = Metrics()
    model = metrics.for_model("m")
    other = metrics.for_model("other")
    for n in (1, 1, 8):
        model.batch_size.observe(n)
    other.batch_size.observe(64)
    before = batches.parse(generate_latest(metrics.registry).decode(), "m")
    for n in (1, 3, 4, 8, 8, 20):
        model.batch_size.observe(n)
    other.batch_size.observe(2)  # another model's batches are not counted
    after = batches.parse(generate_latest(metrics.registry).decode(), "m")
    hist = batches.difference(before, after)
    assert hist["batches"] == 6 and hist["images"] == 44
    assert hist["mean_batch_size"] == round(44 / 6, 3)
    shares = {k: v for k, v in hist["share_by_le"].items() if v}
    assert shares == {
        "1.0": round(1 / 6, 4),
        "4.0": round(2 / 6, 4),
        "8.0": round(2 / 6, 4),
        "32.0": round(1 / 6, 4),
    }
    text = batches.format_histogram(hist)
    assert text.startswith("  batch sizes: 6 batches, mean 7.33; 1: 17%")
    assert "3-4: 33%" in text and "5-8: 33%" in text and "17-32: 17%" in text


def test_no_histogram_is_said_plainly() -> None:
    assert batches.parse("some_other_metric 1\n", "m") is None
    assert batches.difference(None, None) == {}
    assert "no batch" in batches.format_histogram({})
