"""The sweep loops: background tasks that evaluate GPUWorkloads in batches.

Handlers only record objects; two loops sweep them, each running
:func:`gpu_rightsizer.reconcile.sweep` in a worker thread so the event loop never blocks on
Prometheus or the API server:

- the full loop sweeps the whole fleet every jittered interval (and when woken);
- the prompt loop sweeps just the objects that are new or whose spec changed, a debounce after
  the change (so a burst of creations becomes one small sweep), while a full sweep may be
  running: a new GPUWorkload gets its status in seconds whatever the fleet's size. It issues
  the same fixed set of queries, and lists the cluster, limited to those objects' namespaces
  (its capacity check uses the last whole listing's nodes and pods), unless one of them is in
  Apply mode: then the whole cluster. At start-up every object is new, so the first listing is
  swept this way, as one batch, reading the whole cluster.

No object is in both at once: a full sweep leaves out the objects the prompt loop holds, and
an object that changes under a sweep is not written by it (``still_current``): the sweep of
its newer version writes it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from gpu_rightsizer import config, ports, reconcile
from gpu_rightsizer.handlers import health as health_
from gpu_rightsizer.models import gpus, precisions, workloads
from gpu_rightsizer.telemetry import instruments as instruments_, logs

_log = logs.get_logger("gpu_rightsizer.sweeps")


@dataclasses.dataclass
class Sweeper:
    cfg: config.OperatorConfig
    reader: ports.ClusterReader
    source: ports.UsageSource
    writer: ports.StatusWriter
    recorder: ports.EventRecorder
    catalog: gpus.Catalog
    table: precisions.PrecisionTable
    instruments: instruments_.Instruments | None = None
    actuator: ports.TargetWriter | None = None
    crash: Callable[[str], None] | None = None
    objects: dict[workloads.WorkloadRef, reconcile.WorkloadObject] = dataclasses.field(
        default_factory=dict
    )
    last_sweep: dict[str, Any] = dataclasses.field(default_factory=dict)
    health: health_.SweepHealth = dataclasses.field(init=False)
    _wake: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    _prompt_wake: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    _pending: set[workloads.WorkloadRef] = dataclasses.field(default_factory=set)
    """New or changed objects no sweep has read yet."""
    _prompt_held: frozenset[workloads.WorkloadRef] = frozenset()
    """The objects the prompt sweep under way is evaluating."""

    def __post_init__(self) -> None:
        self.health = health_.SweepHealth(
            interval_seconds=self.cfg.interval_seconds,
            jitter_fraction=self.cfg.jitter_fraction,
            max_failures=self.cfg.unhealthy_after_failures,
            stale_intervals=self.cfg.unhealthy_after_intervals,
        )

    def observe(self, obj: reconcile.WorkloadObject) -> None:
        """Record the latest version of an object; wake the loop if its spec is new."""
        old = self.objects.get(obj.ref)
        self.objects[obj.ref] = obj
        if old is None or not _same_version(old, obj):
            self._pending.add(obj.ref)
            self._prompt_wake.set()

    def forget(self, ref: workloads.WorkloadRef) -> None:
        self.objects.pop(ref, None)
        self._pending.discard(ref)
        if self.instruments is not None:
            self.instruments.forget(ref.namespace, ref.name)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Sweep forever: the whole fleet every jittered interval, new objects promptly."""
        prompt = asyncio.create_task(self.run_prompt(), name="gpu-rightsizer-prompt-sweeps")
        try:
            while True:
                interval = self.cfg.interval_seconds * random.uniform(
                    1 - self.cfg.jitter_fraction, 1 + self.cfg.jitter_fraction
                )
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=interval)
                    await asyncio.sleep(self.cfg.debounce_seconds)
                except TimeoutError:
                    pass
                self._wake.clear()
                await self.sweep_once()
        finally:
            prompt.cancel()
            await asyncio.gather(prompt, return_exceptions=True)

    async def run_prompt(self) -> None:
        """Sweep new and changed objects once they stop arriving for a debounce."""
        while True:
            await self._prompt_wake.wait()
            deadline = time.monotonic() + self.cfg.debounce_max_seconds
            while self._prompt_wake.is_set() and time.monotonic() < deadline:
                self._prompt_wake.clear()
                await asyncio.sleep(
                    max(0.0, min(self.cfg.debounce_seconds, deadline - time.monotonic()))
                )
            self._prompt_wake.clear()
            await self.sweep_pending()

    async def sweep_pending(self) -> reconcile.SweepSummary | None:
        """One sweep of the objects that are new or changed since a sweep last read them."""
        if not self._pending:
            return None
        refs, self._pending = frozenset(self._pending), set()
        self._prompt_held = refs
        try:
            return await self.sweep_once(refs)
        finally:
            self._prompt_held = frozenset()

    async def sweep_once(
        self, only: frozenset[workloads.WorkloadRef] | None = None
    ) -> reconcile.SweepSummary | None:
        """Sweep ``only`` those objects, or (None) every object the prompt loop does not hold."""
        if only is None:
            held = self._prompt_held
            objects = [o for ref, o in self.objects.items() if ref not in held]
            self._pending -= {o.ref for o in objects}  # this sweep reads them
        else:
            objects = [self.objects[ref] for ref in only if ref in self.objects]
        if not objects:
            if only is None:
                self.health.succeeded()  # nothing to do is not a failure: the loop is alive
            return None
        try:
            summary = await asyncio.to_thread(self._sweep, objects, narrow=only is not None)
        except Exception as exc:  # keep the loop alive; the next sweep retries
            self.health.failed(f"{type(exc).__name__}: {exc}")
            _log.exception(
                "sweep failed", error=str(exc), consecutive_failures=self.health.failures
            )
            return None
        self.health.succeeded()
        swept = {o.ref: o for o in objects}
        unwritten = summary.failed | summary.superseded
        for result in summary.results:
            current = self.objects.get(result.ref)
            if (
                current is not None
                and current is swept.get(result.ref)
                and result.changed
                and result.ref not in unwritten
            ):
                # Our own patch will come back as a watch event; until then, remember it so
                # that a sweep in between compares against what we wrote. Only while no newer
                # version arrived during the sweep: that one (our patch's echo, or another
                # writer's change after it) is the server's, and must not be papered over, or
                # a concurrent writer's status would stand unrepaired.
                self.objects[result.ref] = dataclasses.replace(current, status=result.document)
        self._record(summary, prompt=only is not None)
        return summary

    def _still_current(
        self, read: Mapping[workloads.WorkloadRef, reconcile.WorkloadObject]
    ) -> Callable[[workloads.WorkloadRef], bool]:
        def still_current(ref: workloads.WorkloadRef) -> bool:
            now, then = self.objects.get(ref), read.get(ref)
            return now is not None and then is not None and _same_version(now, then)

        return still_current

    def _sweep(
        self, objects: list[reconcile.WorkloadObject], *, narrow: bool = False
    ) -> reconcile.SweepSummary:
        return reconcile.sweep(
            objects,
            reader=self.reader,
            source=self.source,
            writer=self.writer,
            recorder=self.recorder,
            catalog=self.catalog,
            table=self.table,
            now=datetime.datetime.now(datetime.UTC),
            settings=reconcile.Settings(
                window=self.cfg.window, savings_event_fraction=self.cfg.savings_event_fraction
            ),
            actuator=self.actuator,
            crash=self.crash or reconcile.no_crash,
            write_workers=self.cfg.write_workers,
            still_current=self._still_current({o.ref: o for o in objects}),
            narrow=narrow,
        )

    def _record(self, summary: reconcile.SweepSummary, *, prompt: bool = False) -> None:
        ready = sum(r.ready for r in summary.results)
        self.last_sweep = {
            "at": time.time(),
            "kind": "prompt" if prompt else "full",
            "api_calls": getattr(self.reader, "last_call_count", None),
            "workloads": len(summary.results),
            "ready": ready,
            "patched": summary.patched,
            "queries": summary.queries,
            "seconds": round(summary.seconds, 3),
            "metrics_error": summary.metrics_error,
            "superseded": len(summary.superseded),
            "stage_seconds": {k: round(v, 3) for k, v in summary.stage_seconds.items()},
        }
        _log.info("sweep done", **self.last_sweep)
        for result in summary.results:
            if result.changed:
                _log.info(
                    "status changed",
                    namespace=result.ref.namespace,
                    name=result.ref.name,
                    fields=list(result.changed_fields),
                )
        for error in summary.errors:
            _log.warning("sweep problem", error=error)
        meters = self.instruments
        if meters is None:
            return
        meters.record_sweep(
            seconds=summary.seconds,
            workloads=len(summary.results),
            queries=summary.queries,
            query_errors=1 if summary.metrics_error else 0,
            status_patches=summary.patched,
        )
        meters.kubernetes_requests.labels("list").inc(getattr(self.reader, "last_call_count", 0))
        meters.kubernetes_requests.labels("patch").inc(summary.patched + summary.target_applies)
        events = sum(len(r.events) for r in summary.results)
        meters.kubernetes_requests.labels("create").inc(events)
        for result in summary.results:
            savings = result.savings
            meters.set_workload(
                result.ref.namespace,
                result.ref.name,
                ready=result.ready,
                savings_monthly=savings.monthly_cost if savings else None,
                currency=savings.currency if savings else None,
                gpus_freed=result.gpus_freed if savings else None,
                energy_kwh=savings.energy_kwh_per_month if savings else None,
                co2_kg=savings.co2_kg_per_month if savings else None,
            )
            usage = result.document.get("usage") or {}
            activity = (usage.get("graphicsEngineActive") or {}).get("p99")
            observed = usage.get("observedSeconds")
            meters.set_activity(
                result.ref.namespace,
                result.ref.name,
                engine_activity_p99=float(activity) if activity is not None else None,
                observed_seconds=float(observed) if observed is not None else None,
            )
            for event in result.events:
                meters.events.labels(event.reason).inc()
            meters.record_apply(
                result.ref.namespace,
                result.ref.name,
                outcome=result.apply_outcome,
                realized_monthly=result.realized.monthly_cost if result.realized else None,
                currency=savings.currency if savings else None,
            )


def _same_version(a: reconcile.WorkloadObject, b: reconcile.WorkloadObject) -> bool:
    """The same spec, generation and approval annotations: a sweep of one holds for the other."""
    return (
        a.generation == b.generation
        and a.spec == b.spec
        and a.annotations == b.annotations  # an approval: act on it now
    )
