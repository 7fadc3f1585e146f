"""Which workload a pod belongs to, and a workload's figures from its pods' figures.

Pods are recognised by parsing their names the way the controllers make them, never by prefix
alone:

- a Deployment's pods are ``<generateName><5 chars>`` where ``generateName`` is
  ``<deployment>-<pod-template-hash>-`` cut to 58 characters (Kubernetes' limit for generated
  names); the hash is one of :attr:`ports.TargetPods.pod_template_hashes`, or any 6 to 10
  lower-case letters and digits when none are known;
- a StatefulSet's pods are ``<statefulset>-<ordinal>``.

So a Deployment ``chat`` never claims ``chat-v2-<hash>-<suffix>``: after ``chat-`` comes
``v2-<hash>-``, which is not a hash. Lookups go through an index keyed by the name a pod's
name implies, so attributing P pods to T targets costs O(P), not O(P x T).

A workload's pods (its replicas, and pods of earlier ReplicaSets still in the window) are
combined conservatively (:func:`combine`): the maximum over pods of every statistic (the busiest
replica), samples summed, and the GPU identity (model, MIG profile, count) of its newest pod,
the one with the least history, since a right-sizing inside the window changes it. Coverage is
over time, not pods (:func:`coverage`): the share of the window's steps at which any of the
workload's pods had a sample, so a rollout that replaced every pod half-way through the window
leaves it fully covered.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping, Sequence

from gpu_rightsizer import ports
from gpu_rightsizer.metrics import queries
from gpu_rightsizer.models import workloads

DEPLOYMENT = "Deployment"
STATEFULSET = "StatefulSet"
ROLLOUT = "Rollout"
REPLICASET_OWNERS = frozenset({DEPLOYMENT, ROLLOUT})
"""Kinds whose pods are ``<name>-<pod template hash>-<5 random characters>``."""

MAX_GENERATED_PREFIX = 58  # 63-character names minus the 5 random characters
SUFFIX_LENGTH = 5
_SUFFIX = re.compile(r"[a-z0-9]{5}")
_ANY_HASH = re.compile(r"[a-z0-9]{6,10}")
_ORDINAL = re.compile(r"0|[1-9][0-9]*")


@dataclasses.dataclass(frozen=True)
class GpuKind:
    """The GPUs of one kind a pod holds: DCGM's ``modelName``, ``GPU_I_PROFILE``, how many."""

    model: str | None
    mig_profile: str | None
    count: int


@dataclasses.dataclass
class PodUsage:
    """What the sweep's queries said about one pod: query name -> value, and its GPUs."""

    namespace: str
    pod: str
    values: dict[str, float] = dataclasses.field(default_factory=dict)
    gpus: list[GpuKind] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class WorkloadUsage:
    """A workload's figures, combined over its pods."""

    values: Mapping[str, float]
    pods: tuple[str, ...]
    gpu_model: str | None = None
    mig_profile: str | None = None
    gpus: int | None = None


# --- recognising pods ------------------------------------------------------------------------


def deployment_owns(target: ports.TargetPods, pod: str) -> bool:
    """Whether ``pod`` is named like a pod of Deployment ``target.name``."""
    if len(pod) <= SUFFIX_LENGTH or not _SUFFIX.fullmatch(pod[-SUFFIX_LENGTH:]):
        return False
    prefix = pod[:-SUFFIX_LENGTH]
    if target.pod_template_hashes:
        return any(
            prefix == f"{target.name}-{h}-"[:MAX_GENERATED_PREFIX]
            for h in target.pod_template_hashes
        )
    head = f"{target.name}-"
    if len(head) >= MAX_GENERATED_PREFIX:
        # A name of 57 characters or more: the cut falls inside the name, no hash is left.
        return prefix == head[:MAX_GENERATED_PREFIX]
    if not prefix.startswith(head):
        return False
    rest = prefix[len(head) :]
    if rest.endswith("-") and _ANY_HASH.fullmatch(rest[:-1]):
        return True
    # Cut to 58 characters: what is left of "<hash>-" must still look like its beginning.
    return len(prefix) == MAX_GENERATED_PREFIX and bool(re.fullmatch(r"[a-z0-9]{0,10}-?", rest))


def statefulset_owns(target: ports.TargetPods, pod: str) -> bool:
    """Whether ``pod`` is ``<target.name>-<ordinal>``."""
    head = f"{target.name}-"
    return pod.startswith(head) and bool(_ORDINAL.fullmatch(pod[len(head) :]))


def owns(target: ports.TargetPods, namespace: str, pod: str) -> bool:
    """Whether pod ``namespace/pod`` belongs to ``target`` (unknown kinds own nothing)."""
    if namespace != target.namespace:
        return False
    if target.kind in REPLICASET_OWNERS:
        return deployment_owns(target, pod)
    if target.kind == STATEFULSET:
        return statefulset_owns(target, pod)
    return False


class PodIndex:
    """Finds the targets a pod belongs to by the owner names its name could imply."""

    def __init__(self, targets: Iterable[ports.TargetPods]) -> None:
        self._by_name: dict[tuple[str, str], list[ports.TargetPods]] = {}
        self._long: dict[str, list[ports.TargetPods]] = {}
        for target in targets:
            self._by_name.setdefault((target.namespace, target.name), []).append(target)
            if (
                target.kind in REPLICASET_OWNERS
                and len(target.name) + 2 > MAX_GENERATED_PREFIX - 10
            ):
                # Its pods' names may be cut inside the hash: no name can be parsed out.
                self._long.setdefault(target.namespace, []).append(target)

    def owners(self, namespace: str, pod: str) -> tuple[ports.TargetPods, ...]:
        """Every target that ``namespace/pod`` belongs to (usually none or one)."""
        names = set()
        head, _, _ordinal = pod.rpartition("-")
        if head:
            names.add(head)  # a StatefulSet's "<name>-<ordinal>"
            name, _, _hash = head.rpartition("-")
            if name:
                names.add(name)  # a Deployment's "<name>-<hash>-<suffix>"
        candidates = [t for n in sorted(names) for t in self._by_name.get((namespace, n), ())]
        candidates += self._long.get(namespace, ())
        found: dict[int, ports.TargetPods] = {}
        for target in candidates:
            if id(target) not in found and owns(target, namespace, pod):
                found[id(target)] = target
        return tuple(found.values())


# --- combining pods -------------------------------------------------------------------------


def attribute(
    targets: Sequence[ports.TargetPods], pods: Iterable[PodUsage]
) -> dict[workloads.WorkloadRef, list[PodUsage]]:
    """Each workload's pods among ``pods``; workloads without any are left out."""
    index = PodIndex(targets)
    out: dict[workloads.WorkloadRef, list[PodUsage]] = {}
    for pod in pods:
        for target in index.owners(pod.namespace, pod.pod):
            members = out.setdefault(target.workload, [])
            if all(p is not pod for p in members):
                members.append(pod)
    return out


def combine(
    pods: Sequence[PodUsage],
    rules: Mapping[str, queries.AcrossPods],
    grid: queries.Grid | None = None,
) -> WorkloadUsage:
    """A workload's figures from its pods': ``rules`` says how each query's values combine
    (unlisted ones: the maximum); the GPU identity is the newest pod's. With the sweep's
    ``grid``, the workload's ``coverage`` is added (:func:`coverage`)."""
    values: dict[str, float] = {}
    for pod in pods:
        for name, value in pod.values.items():
            if not math.isfinite(value):
                continue
            rule = rules.get(name, queries.AcrossPods.MAX)
            if name not in values:
                values[name] = value
            elif rule is queries.AcrossPods.SUM:
                values[name] += value
            elif rule is queries.AcrossPods.MIN:
                values[name] = min(values[name], value)
            else:
                values[name] = max(values[name], value)
    if grid is not None:
        covered = coverage(pods, grid)
        if covered is not None:
            values[queries.COVERAGE] = covered
    model, profile, count = _identity(pods)
    return WorkloadUsage(
        values=values,
        pods=tuple(sorted({p.pod for p in pods})),
        gpu_model=model,
        mig_profile=profile,
        gpus=count,
    )


def coverage(pods: Sequence[PodUsage], grid: queries.Grid) -> float | None:
    """The share of the window's steps at which any of ``pods`` had a sample (0-1), or None
    when no pod has a step count.

    Each pod's steps lie between its ``first_step`` and ``last_step`` (Unix seconds of steps of
    ``grid``; a first step before the window, which the query looks one step beyond, counts as
    the window's first). The union of those intervals is what the pods cover together, less
    every pod's gaps (steps inside its interval without a sample: where they fall is not known,
    so none is assumed to be covered by another pod). Exact when no pod has gaps, a lower bound
    otherwise, and never below the best pod's own count. A pod without its first or last step
    (it appeared between two queries) counts only through that.
    """
    step = grid.resolution_seconds
    window_start = grid.first_step
    earliest = None if window_start is None else round(window_start / step)
    best = 0.0
    gaps = 0.0
    intervals: list[tuple[int, int]] = []
    counted = False
    for pod in pods:
        count = pod.values.get(queries.COVERED_STEPS)
        if count is None or not math.isfinite(count):
            continue
        counted = True
        count = max(count, 0.0)
        best = max(best, count)
        first = pod.values.get(queries.FIRST_STEP)
        last = pod.values.get(queries.LAST_STEP)
        if first is None or last is None or not (math.isfinite(first) and math.isfinite(last)):
            continue
        start, end = round(first / step), round(last / step)
        if earliest is not None:
            start = max(start, earliest)
        if end < start:
            continue
        intervals.append((start, end))
        gaps += max(end - start + 1 - count, 0.0)
    if not counted:
        return None
    union = 0
    current: tuple[int, int] | None = None
    for start, end in sorted(intervals):
        if current is not None and start <= current[1] + 1:
            current = (current[0], max(current[1], end))
            continue
        if current is not None:
            union += current[1] - current[0] + 1
        current = (start, end)
    if current is not None:
        union += current[1] - current[0] + 1
    covered = max(best, union - gaps)
    return min(max(covered / grid.steps, 0.0), 1.0)


def _identity(pods: Sequence[PodUsage]) -> tuple[str | None, str | None, int | None]:
    """(model, MIG profile, GPU count) of the newest pod with GPUs (the latest first step);
    ties: the most GPUs."""
    with_gpus = [p for p in pods if p.gpus]
    if not with_gpus:
        return None, None, None

    def order(pod: PodUsage) -> tuple[float, int, str]:
        first = pod.values.get(queries.FIRST_STEP, -math.inf)
        return (-first if math.isfinite(first) else math.inf, -_count(pod), pod.pod)

    newest = min(with_gpus, key=order)
    main = max(newest.gpus, key=lambda g: (g.count, g.model or "", g.mig_profile or ""))
    return main.model, main.mig_profile, _count(newest)


def _count(pod: PodUsage) -> int:
    return sum(g.count for g in pod.gpus)
