"""Which requests are traced: Triton's trace settings (the trace extension's
`/v2[/models/{name}]/trace/setting`, gRPC TraceSetting), started from OpenTelemetry's
`OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`, and the sampling decision they make.

Settings, as Triton names them (values are strings, trace_level a list):

- trace_level: ["OFF"] traces nothing; ["TIMESTAMPS"] (or "TENSORS", traced as TIMESTAMPS:
  tensors are never put in a trace) traces.
- trace_rate: one request in every `trace_rate` starts a trace (the first, then every Nth), as
  Triton counts. "0" starts none: only callers' sampled traces are continued.
- trace_count: traces left to take; "-1" is no limit. Each trace taken counts one off.
- trace_mode: always "opentelemetry" (spans go to the OTLP exporter; there is no trace file).

A model's settings override the global ones where given (a null value removes the model's
own, and it follows the global one again). A caller's `traceparent` decides for its request
when the sampler is parent-based (OpenTelemetry's default, `parentbased_always_on`), unless
trace_level is OFF or trace_count is used up. No OpenTelemetry import here.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from app.errors import InvalidInput, ModelControlDisabled

log = logging.getLogger(__name__)

LEVELS = ("OFF", "TIMESTAMPS", "TENSORS")
MODE = "opentelemetry"
KEYS = ("trace_level", "trace_rate", "trace_count", "trace_mode")
# Triton's triton-mode settings: there is no trace file here (spans go to the exporter).
FILE_KEYS = ("trace_file", "log_frequency")


class TraceControlDisabled(ModelControlDisabled):
    """Trace settings cannot be changed here (403)."""


def check_changeable(workers: int) -> None:
    """With several worker processes a change would reach one of them: refused, as the
    repository's load and unload are; OTEL_TRACES_SAMPLER sets every worker at start."""
    if workers > 1:
        raise TraceControlDisabled(
            f"trace settings are per process and {workers} workers serve: set "
            "OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG for all of them at start instead"
        )


@dataclass(frozen=True)
class Rule:
    level: tuple[str, ...] = ("TIMESTAMPS",)
    rate: int = 1
    count: int = -1

    @property
    def on(self) -> bool:
        return "OFF" not in self.level and self.count != 0

    def as_triton(self) -> dict[str, Any]:
        return {
            "trace_level": list(self.level),
            "trace_rate": str(self.rate),
            "trace_count": str(self.count),
            "trace_mode": MODE,
        }


def rule_from_sampler(name: str | None, arg: str | None) -> tuple[Rule, bool]:
    """OTEL_TRACES_SAMPLER (and its argument) -> (the global rule, parent-based?)."""
    name = (name or "parentbased_always_on").strip().lower()
    parent_based = name.startswith("parentbased_")
    base = name.removeprefix("parentbased_")
    if base == "always_on":
        return Rule(), parent_based
    if base == "always_off":
        # parent-based: callers' sampled traces still continue; else nothing at all
        return (Rule(rate=0), True) if parent_based else (Rule(level=("OFF",)), False)
    if base == "traceidratio":
        try:
            ratio = float(arg) if arg not in (None, "") else 1.0
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0 or math.isnan(ratio):
            log.warning("OTEL_TRACES_SAMPLER_ARG %r is not a ratio in [0, 1]: using 1", arg)
            ratio = 1.0
        rate = 0 if ratio == 0 else max(1, round(1 / ratio))
        return Rule(rate=rate), parent_based
    log.warning("OTEL_TRACES_SAMPLER %r is not supported here: using parentbased_always_on", name)
    return Rule(), True


class TraceSettings:
    """The global rule, each model's overrides, and the sampling decision."""

    def __init__(self, rule: Rule, parent_based: bool = True, enabled: bool = True) -> None:
        """`enabled`: an exporter is configured; without one, tracing stays OFF."""
        self.enabled = enabled
        self.parent_based = parent_based
        self.initial = rule if enabled else replace(rule, level=("OFF",))
        self.rule = self.initial
        self.models: dict[str, dict[str, Any]] = {}  # model -> its own settings (Rule fields)
        self._seen: dict[str | None, int] = {}  # requests counted towards trace_rate
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], enabled: bool) -> TraceSettings:
        rule, parent_based = rule_from_sampler(
            environ.get("OTEL_TRACES_SAMPLER"), environ.get("OTEL_TRACES_SAMPLER_ARG")
        )
        return cls(rule, parent_based, enabled)

    def effective(self, model: str | None) -> Rule:
        own = self.models.get(model) if model is not None else None
        return replace(self.rule, **own) if own else self.rule

    # ------------------------------------------------------------------ the decision
    def decide(self, model: str | None, parent_sampled: bool | None) -> bool:
        """Trace this request? `parent_sampled`: the caller's flag (None: no caller trace)."""
        with self._lock:
            key = model if model in self.models else None
            rule = self.effective(model)
            if not rule.on:
                return False
            if self.parent_based and parent_sampled is not None:
                take = parent_sampled
            elif rule.rate == 0:
                take = False
            else:
                seen = self._seen.get(key, 0)
                self._seen[key] = seen + 1
                take = seen % rule.rate == 0
            if take and rule.count > 0:
                self._count_one(key, rule.count - 1)
            return take

    def _count_one(self, key: str | None, left: int) -> None:
        if key is not None and "count" in self.models[key]:
            self.models[key]["count"] = left
        else:
            self.rule = replace(self.rule, count=left)

    # ------------------------------------------------------------------ Triton's API
    def get(self, model: str | None = None) -> dict[str, Any]:
        with self._lock:
            return self.effective(model).as_triton()

    def update(self, model: str | None, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Apply Triton's POST body (a null value clears a setting); the settings after it.
        Raises InvalidInput for an unknown setting or a bad value, changing nothing."""
        if not isinstance(changes, Mapping):
            raise InvalidInput("trace settings must be a JSON object of setting: value")
        parsed: dict[str, Any] = {}
        cleared: list[str] = []
        for key, value in changes.items():
            if key in FILE_KEYS:
                if value is None:
                    continue
                raise InvalidInput(
                    f"{key!r} is not supported: traces are OpenTelemetry spans sent to "
                    "OTEL_EXPORTER_OTLP_ENDPOINT, not written to a file"
                )
            if key not in KEYS:
                raise InvalidInput(f"unknown trace setting {key!r}; known: {', '.join(KEYS)}")
            if key == "trace_mode":
                if value is None:
                    continue
                if _one(value, key).lower() != MODE:
                    raise InvalidInput(f"trace_mode must be {MODE!r}: the only mode served")
                continue
            if value is None:
                cleared.append(key)
                continue
            field, parsed_value = _parse(key, value)
            parsed[field] = parsed_value
        turns_on = "level" in parsed and "OFF" not in parsed["level"]
        if turns_on and not self.enabled:
            raise InvalidInput(
                "tracing is not configured: set OTEL_EXPORTER_OTLP_ENDPOINT (and install the "
                "otel extra) to send traces; see docs/observability.md"
            )
        with self._lock:
            if model is None:
                base = self.initial
                fields = {f: getattr(base, f) for f in map(_field, cleared)}
                self.rule = replace(self.rule, **fields, **parsed)
                if "rate" in parsed or "rate" in fields:
                    self._seen.pop(None, None)
            else:
                own = self.models.setdefault(model, {})
                for key in cleared:
                    own.pop(_field(key), None)
                own.update(parsed)
                if not own:
                    del self.models[model]
                self._seen.pop(model, None)
            return self.effective(model).as_triton()

    def clear(self, model: str) -> dict[str, Any]:
        """Remove a model's own settings: it follows the global ones again."""
        with self._lock:
            self.models.pop(model, None)
            self._seen.pop(model, None)
            return self.rule.as_triton()


def _field(key: str) -> str:
    return key.removeprefix("trace_")


def _one(value: Any, key: str) -> str:
    """Triton sends single values as a string, or a list of one string (gRPC always does)."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidInput(f"{key} must be a string, got {value!r}")
    return str(value)


def _parse(key: str, value: Any) -> tuple[str, Any]:
    if key == "trace_level":
        levels = value if isinstance(value, list) else [value]
        if not levels or not all(isinstance(v, str) and v.upper() in LEVELS for v in levels):
            raise InvalidInput(f"trace_level must be a list of {', '.join(LEVELS)}, got {value!r}")
        upper = tuple(v.upper() for v in levels)
        if "OFF" in upper and len(upper) > 1:
            raise InvalidInput("trace_level OFF cannot be combined with another level")
        return "level", upper
    text = _one(value, key)
    try:
        number = int(text)
    except ValueError:
        raise InvalidInput(f"{key} must be an integer, got {text!r}") from None
    if key == "trace_rate":
        if number < 0:
            raise InvalidInput(f"trace_rate must be 0 or more, got {number}")
        return "rate", number
    if number < -1:
        raise InvalidInput(f"trace_count must be -1 (no limit) or more, got {number}")
    return "count", number
