"""Is the sweep loop doing its job? The answer behind ``/healthz`` (liveness and readiness).

kopf's ``/healthz`` answers 200 while its event loop runs, even when every sweep fails. The
sweep loop reports each sweep here, and the probe handler fails (``/healthz`` answers 500) when

- the last ``max_failures`` sweeps in a row failed (a sweep fails when it raises: the cluster
  cannot be listed, the API server refuses the operator...); or
- no sweep succeeded for ``stale_intervals`` intervals (jitter included, and at least
  ``min_stale_seconds``): the loop is stuck, e.g. in a sweep that never returns.

A sweep in which some workloads have problems (a target missing, Prometheus unreachable, an
invalid spec) has succeeded: those are reported on the workloads' conditions, and restarting the
operator would not help them. A sweep with nothing to evaluate succeeds too.

Pure bookkeeping: the clock is passed in, no kopf, no I/O.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass
class SweepHealth:
    interval_seconds: float
    """The sweep interval."""
    jitter_fraction: float = 0.1
    max_failures: int = 3
    """Unhealthy after this many failed sweeps in a row."""
    stale_intervals: float = 3.0
    """Unhealthy when no sweep succeeded for this many (jittered) intervals..."""
    min_stale_seconds: float = 60.0
    """...and at least this long, so short test intervals do not make slow sweeps unhealthy."""
    clock: Callable[[], float] = time.monotonic
    started: float = dataclasses.field(init=False)
    last_success: float | None = None
    failures: int = 0
    """Failed sweeps since the last successful one."""
    last_error: str | None = None

    def __post_init__(self) -> None:
        self.started = self.clock()

    @property
    def stale_after_seconds(self) -> float:
        longest_interval = self.interval_seconds * (1 + self.jitter_fraction)
        return max(self.stale_intervals * longest_interval, self.min_stale_seconds)

    def succeeded(self) -> None:
        self.last_success = self.clock()
        self.failures = 0
        self.last_error = None

    def failed(self, error: str) -> None:
        self.failures += 1
        self.last_error = error

    def problem(self) -> str | None:
        """Why the operator is unhealthy, or None when it is healthy."""
        if self.failures >= self.max_failures:
            return f"the last {self.failures} sweeps failed; the last one: {self.last_error}"
        since = self.clock() - (
            self.last_success if self.last_success is not None else self.started
        )
        if since > self.stale_after_seconds:
            what = "no sweep has succeeded" if self.last_success is None else "no sweep succeeded"
            return (
                f"{what} for {since:.0f}s (sweeps run every {self.interval_seconds:g}s; "
                f"unhealthy after {self.stale_after_seconds:g}s)"
            )
        return None

    def report(self) -> dict[str, Any]:
        """What ``/healthz`` shows about the sweeps."""
        now = self.clock()
        return {
            "consecutive_failures": self.failures,
            "last_error": self.last_error,
            "seconds_since_success": (
                round(now - self.last_success, 1) if self.last_success is not None else None
            ),
        }
