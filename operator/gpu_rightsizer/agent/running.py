"""The agent's loop: read, attribute, publish; every interval, until told to stop."""

from __future__ import annotations

import dataclasses
import pathlib
import threading
import time
from collections.abc import Callable, Collection, Mapping
from typing import Protocol

from gpu_rightsizer.agent import procfs, serving
from gpu_rightsizer.nodeusage import attribution, exposition, readings
from gpu_rightsizer.nvml import reader as nvml_reader
from gpu_rightsizer.telemetry import logs

READINGS = "gpu_rightsizer_agent_readings_total"
READING_FAILURES = "gpu_rightsizer_agent_reading_failures_total"
READING_SECONDS = "gpu_rightsizer_agent_reading_duration_seconds"
LAST_READING = "gpu_rightsizer_agent_last_reading_timestamp_seconds"
POD_LISTS = "gpu_rightsizer_agent_pod_lists_total"
POD_LIST_UP = "gpu_rightsizer_agent_pod_list_up"


class Pods(Protocol):
    """Where pod UIDs are resolved (:class:`.pods.PodDirectory`, or a fake in tests)."""

    lists: int
    error: str | None

    @property
    def pods(self) -> Mapping[str, attribution.PodIdentity]: ...

    def refresh_if_needed(self, now: float, unknown: Collection[str]) -> None: ...


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What one pass produced: the exposition and what ``/healthz`` reports."""

    text: str
    reading: readings.NodeReading
    finished_monotonic: float
    pod_list_error: str | None = None


class Agent:
    """One node's agent. ``step()`` is one pass; ``run()`` loops until ``stop`` is set."""

    def __init__(
        self,
        reader: nvml_reader.Reader,
        pods: Pods | None,
        *,
        node: str,
        proc_root: pathlib.Path,
        interval_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._reader = reader
        self._pods = pods
        self._node = node
        self._proc_root = proc_root
        self.interval_seconds = interval_seconds
        self._monotonic = monotonic
        self._wall = wall
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._readings = 0
        self._failures = 0
        self._started = monotonic()
        self._log = logs.get_logger("gpu_rightsizer.agent")
        self._last_errors: frozenset[tuple[str, str, int | None]] = frozenset()
        self._last_driver_error: str | None = None
        self._last_pod_list_error: str | None = None

    # --- one pass ---------------------------------------------------------------------------

    def step(self) -> Snapshot:
        started = self._monotonic()
        reading = self._reader.read()
        owners = procfs.owners(self._proc_root, attribution.pids(reading))
        known = self._pods.pods if self._pods is not None else {}
        if self._pods is not None:
            self._pods.refresh_if_needed(started, attribution.unknown_pods(reading, owners, known))
            known = self._pods.pods
        uses = attribution.attribute_all(reading, owners, known)
        families = list(exposition.families(reading, uses, self._node))
        self._readings += 1
        families += self._own_families(self._monotonic() - started)
        snapshot = Snapshot(
            text=exposition.render(families),
            reading=reading,
            finished_monotonic=self._monotonic(),
            pod_list_error=None if self._pods is None else self._pods.error,
        )
        with self._lock:
            self._snapshot = snapshot
        self._report(reading, snapshot)
        return snapshot

    def _own_families(self, seconds: float) -> list[exposition.Family]:
        node = (("Hostname", self._node),)

        def one(name: str, kind: str, text: str, value: float) -> exposition.Family:
            return exposition.Family(name, kind, text, (exposition.Sample(node, value),))

        out = [
            one(READINGS, "counter", "NVML readings made.", float(self._readings)),
            one(READING_FAILURES, "counter", "Passes that failed.", float(self._failures)),
            one(READING_SECONDS, "gauge", "Time the last pass took.", seconds),
            one(LAST_READING, "gauge", "When the last pass ended (Unix time).", self._wall()),
        ]
        if self._pods is not None:
            out += [
                one(POD_LISTS, "counter", "Pod lists read from the API server.", self._pods.lists),
                one(
                    POD_LIST_UP,
                    "gauge",
                    "1 when the last pod list was read.",
                    0.0 if self._pods.error else 1.0,
                ),
            ]
        return out

    def _report(self, reading: readings.NodeReading, snapshot: Snapshot) -> None:
        """Log what changed (the driver, the failing fields, the pod list), not each pass."""
        errors = frozenset((e.device, e.field, e.code) for e in reading.errors)
        if errors != self._last_errors:
            for error in sorted(errors - self._last_errors, key=str):
                self._log.warning(
                    "nvml field unavailable", device=error[0], field=error[1], code=error[2]
                )
            self._last_errors = errors
        if reading.driver_error != self._last_driver_error:
            if reading.driver_error:
                self._log.warning("nvml unavailable", error=reading.driver_error)
            else:
                self._log.info("nvml available", driver=reading.driver_version)
            self._last_driver_error = reading.driver_error
        if snapshot.pod_list_error != self._last_pod_list_error:
            if snapshot.pod_list_error:
                self._log.warning("pod list failed", error=snapshot.pod_list_error)
            self._last_pod_list_error = snapshot.pod_list_error

    # --- serving ----------------------------------------------------------------------------

    def metrics(self) -> str:
        with self._lock:
            snapshot = self._snapshot
        return "" if snapshot is None else snapshot.text

    def health(self) -> serving.Health:
        with self._lock:
            snapshot = self._snapshot
        stale_after = max(3 * self.interval_seconds, 30.0)
        now = self._monotonic()
        if snapshot is None:
            starting = now - self._started < stale_after
            return serving.Health(starting, {"reason": "no reading yet"})
        age = now - snapshot.finished_monotonic
        detail = {
            "lastReadingAgeSeconds": round(age, 3),
            "nvml": "ok" if snapshot.reading.ok else snapshot.reading.driver_error,
            "devices": len(snapshot.reading.devices),
            "fieldErrors": len(snapshot.reading.errors),
            "podList": snapshot.pod_list_error or "ok",
        }
        if age > stale_after:
            return serving.Health(False, {"reason": "the reading loop is stuck", **detail})
        return serving.Health(True, detail)

    def run(self, stop: threading.Event) -> None:
        """Read every interval until ``stop`` is set; a failed pass is logged and counted."""
        while not stop.is_set():
            began = self._monotonic()
            try:
                self.step()
            except Exception as exc:  # one bad pass must not end the agent
                self._failures += 1
                self._log.exception("agent pass failed", error=str(exc))
            stop.wait(max(self.interval_seconds - (self._monotonic() - began), 0.0))
        self._reader.close()
