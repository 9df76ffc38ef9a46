"""Triton's trace settings and the sampling decision they make."""

from __future__ import annotations

import pytest

from app.errors import InvalidInput
from app.observability.trace_settings import Rule, TraceSettings, rule_from_sampler


def decisions(settings: TraceSettings, n: int, model: str | None = None) -> list[bool]:
    return [settings.decide(model, None) for _ in range(n)]


@pytest.mark.parametrize(
    ("name", "arg", "rule", "parent_based"),
    [
        (None, None, Rule(), True),  # OpenTelemetry's default: parentbased_always_on
        ("always_on", None, Rule(), False),
        ("always_off", None, Rule(level=("OFF",)), False),
        ("parentbased_always_off", None, Rule(rate=0), True),
        ("traceidratio", "0.25", Rule(rate=4), False),
        ("parentbased_traceidratio", "0.1", Rule(rate=10), True),
        ("traceidratio", "0", Rule(rate=0), False),
        ("traceidratio", "nonsense", Rule(rate=1), False),
        ("jaeger_remote", None, Rule(), True),  # not served: the default, with a warning
    ],
)
def test_otel_sampler_variables(name, arg, rule, parent_based) -> None:
    assert rule_from_sampler(name, arg) == (rule, parent_based)


def test_one_in_rate_and_the_count() -> None:
    settings = TraceSettings(Rule(rate=3))
    assert decisions(settings, 7) == [True, False, False, True, False, False, True]
    settings.update(None, {"trace_count": "2", "trace_rate": "1"})
    assert decisions(settings, 4) == [True, True, False, False]
    assert settings.get()["trace_count"] == "0"
    settings.update(None, {"trace_count": None})  # cleared: back to the start's value
    assert settings.get()["trace_count"] == "-1" and settings.decide(None, None)


def test_level_off_traces_nothing_not_even_a_callers_sampled_trace() -> None:
    settings = TraceSettings(Rule())
    assert settings.decide(None, True) and not settings.decide(None, False)  # parent-based
    settings.update(None, {"trace_level": ["OFF"]})
    assert not settings.decide(None, True) and not any(decisions(settings, 3))


def test_rate_zero_only_continues_callers_traces() -> None:
    settings = TraceSettings(Rule(rate=0), parent_based=True)
    assert not any(decisions(settings, 5))
    assert settings.decide(None, True)


def test_a_models_settings_override_the_global_ones_until_cleared() -> None:
    settings = TraceSettings(Rule())
    after = settings.update("m", {"trace_level": ["OFF"]})
    assert after["trace_level"] == ["OFF"] and after["trace_rate"] == "1"
    assert settings.get()["trace_level"] == ["TIMESTAMPS"]
    assert not settings.decide("m", None) and settings.decide("other", None)
    settings.update("m", {"trace_level": ["TIMESTAMPS"], "trace_rate": "2"})
    assert decisions(settings, 4, "m") == [True, False, True, False]
    settings.update(None, {"trace_rate": "5"})
    assert settings.get("m")["trace_rate"] == "2"  # its own
    settings.update("m", {"trace_rate": None})
    assert settings.get("m")["trace_rate"] == "5"  # the global one again
    assert settings.clear("m") == settings.get("m") == settings.get()


def test_a_trace_count_of_a_model_counts_its_own() -> None:
    settings = TraceSettings(Rule())
    settings.update("m", {"trace_count": "1"})
    assert decisions(settings, 3, "m") == [True, False, False]
    assert settings.get()["trace_count"] == "-1" and settings.decide(None, None)


@pytest.mark.parametrize(
    "changes",
    [
        {"trace_level": ["LOUD"]},
        {"trace_level": ["OFF", "TIMESTAMPS"]},
        {"trace_level": []},
        {"trace_rate": "-1"},
        {"trace_rate": "often"},
        {"trace_rate": True},
        {"trace_count": "-2"},
        {"trace_mode": "triton"},
        {"trace_file": "/tmp/trace.json"},  # no trace file: spans go to the exporter
        {"log_frequency": "10"},
        {"what": "1"},
        ["trace_rate", "1"],
    ],
)
def test_bad_settings_are_refused_and_change_nothing(changes) -> None:
    settings = TraceSettings(Rule(rate=7))
    before = settings.get()
    with pytest.raises(InvalidInput):
        settings.update(None, changes)
    assert settings.get() == before


def test_triton_shapes_are_accepted() -> None:
    """HTTP sends "5", tritonclient.grpc sends ["5"]; trace_mode and file keys may be cleared."""
    settings = TraceSettings(Rule())
    out = settings.update(
        None,
        {"trace_rate": ["5"], "trace_level": ["timestamps", "TENSORS"], "trace_mode": None},
    )
    assert out == {
        "trace_level": ["TIMESTAMPS", "TENSORS"],
        "trace_rate": "5",
        "trace_count": "-1",
        "trace_mode": "opentelemetry",
    }
    settings.update(None, {"trace_mode": "opentelemetry", "trace_file": None})


def test_without_an_exporter_tracing_cannot_be_turned_on() -> None:
    settings = TraceSettings(Rule(), enabled=False)
    assert settings.get()["trace_level"] == ["OFF"] and not settings.decide(None, True)
    with pytest.raises(InvalidInput, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        settings.update(None, {"trace_level": ["TIMESTAMPS"]})
    settings.update(None, {"trace_rate": "3"})  # harmless: allowed
