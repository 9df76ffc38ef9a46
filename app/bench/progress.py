"""A progress line on stderr, redrawn in place a few times a second while a step runs."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

from app.bench.stats import Step

WIDTH = 24


class Progress:
    """Draws `[#####.....] 6.0/20 s  c=16  812 ok  0 err  135.2 req/s` for one step.

    Silent when the stream is not a terminal (logs stay clean) unless `force` is set.
    """

    def __init__(
        self, stream: TextIO | None = None, force: bool | None = None, interval: float = 0.25
    ):
        self.stream = stream or sys.stderr
        self.enabled = force if force is not None else self.stream.isatty()
        self.interval = interval

    def line(self, step: Step, phase: str, elapsed: float, total: float | None) -> str:
        if total:
            frac = min(1.0, max(0.0, elapsed / total))
            bar = "#" * int(frac * WIDTH) + "." * (WIDTH - int(frac * WIDTH))
            where = f"[{bar}] {elapsed:5.1f}/{total:g} s"
        else:
            where = f"{elapsed:6.1f} s"
        rate = step.ok / elapsed if elapsed > 0 and phase == "measure" else 0.0
        return (
            f"{where}  {phase:<7} {step.label:<10} {step.ok:>7} ok {step.failed:>5} err "
            f"{rate:8.1f} req/s"
        )

    async def run(self, step: Step, state: dict[str, float | str | None]) -> None:
        """Redraw until cancelled. `state` holds phase, start (monotonic) and total seconds."""
        if not self.enabled:
            return
        try:
            while True:
                elapsed = time.perf_counter() - float(state["start"] or 0.0)
                total = state.get("total")
                text = self.line(
                    step, str(state["phase"]), elapsed, float(total) if total else None
                )
                self.stream.write("\r" + text + "\x1b[K")
                self.stream.flush()
                await asyncio.sleep(self.interval)
        finally:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
