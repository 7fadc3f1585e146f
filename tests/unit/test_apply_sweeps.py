"""Apply mode through whole sweeps, against an in-memory cluster that server-side applies.

The fake cluster does what the real one does with our patches, at the level the operator can
see: RFC 6902 JSON patches applied atomically (a failed ``test`` refuses the whole patch), a
generation bump on every spec change, a controller that rolls out
the new pod template (healthy, or crash-looping), and the GPUWorkload's status as merge patches
leave it. The crash hook raises, which is what an operator dying mid-sweep looks like to the
API server: the next sweep starts from what was written.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from gpu_rightsizer import catalogs, ports, reconcile
from gpu_rightsizer.apply import patches, planning
from gpu_rightsizer.manifests import targets
from gpu_rightsizer.models import crd, gpus, inventory, workloads
from tests.unit import test_reconcile as base

NOW = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)
REF = workloads.WorkloadRef(namespace="ml", name="embedder")
OLD_RESOURCE = "nvidia.com/mig-3g.40gb"
NEW_RESOURCE = "nvidia.com/mig-1g.10gb"
STOCK = inventory.Inventory(
    nodes=(
        inventory.NodeGPUs(
            name="a100-mig-0",
            product="NVIDIA-A100-SXM4-80GB",
            gpu_model="A100-80GB",
            gpu_count=8,
            mig_capable=True,
            mig_strategy=inventory.MigStrategy.MIXED,
            mig_config="all-balanced",
            whole_allocatable=0,
            whole_free=0,
            mig_allocatable={"3g.40gb": 8, "1g.10gb": 16},
            mig_free={"3g.40gb": 4, "1g.10gb": 16},
        ),
    ),
    source="test nodes",
)


class CrashedError(Exception):
    """The operator process died here."""


# --- RFC 6902, as the API server applies a JSON patch ------------------------------------------


class PatchRefusedError(Exception):
    """422: a test operation failed; nothing changed."""


def _walk(doc: Any, pointer: str) -> tuple[Any, str]:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
    node = doc
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node, parts[-1]


def json_patch(doc: dict[str, Any], ops: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    for op in ops:
        parent, key = _walk(out, op["path"])
        if op["op"] == "test":
            got = parent[int(key)] if isinstance(parent, list) else parent.get(key, KeyError)
            if got != op["value"]:
                raise PatchRefusedError(f"test {op['path']}: {got!r} != {op['value']!r}")
        elif op["op"] in ("add", "replace"):
            if isinstance(parent, list):
                if key == "-":
                    parent.append(copy.deepcopy(op["value"]))
                else:
                    parent.insert(int(key), copy.deepcopy(op["value"]))
            else:
                if op["op"] == "replace" and key not in parent:
                    raise PatchRefusedError(f"replace {op['path']}: missing")
                parent[key] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            if isinstance(parent, list):
                parent.pop(int(key))
            else:
                del parent[key]
    return out


@dataclasses.dataclass
class FakeCluster:
    """One Deployment, its ReplicaSets and pods, rolled out by a pretend controller."""

    deployment: dict[str, Any]
    behaviour: str = "healthy"
    spec_changes: int = 0
    applies: int = 0
    replicasets: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    pods: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    crash_at: str | None = None
    stock: inventory.Inventory = STOCK

    def __post_init__(self) -> None:
        meta = self.deployment.setdefault("metadata", {})
        meta.setdefault("generation", 1)
        meta["uid"] = "dep-uid"
        self._roll_out(healthy=True)

    # ports.TargetWriter
    def patch(
        self, kind: str, namespace: str, name: str, operations: Sequence[Mapping[str, Any]]
    ) -> None:
        self.applies += 1
        before = json.dumps(self.deployment["spec"], sort_keys=True)
        self.deployment = json_patch(self.deployment, operations)
        if json.dumps(self.deployment["spec"], sort_keys=True) != before:
            self.spec_changes += 1
            self.deployment["metadata"]["generation"] += 1
            self._roll_out(healthy=self.behaviour == "healthy")

    def may_patch(self, kind: str, namespace: str) -> str | None:
        return None

    def _roll_out(self, *, healthy: bool) -> None:
        template = json.dumps(self.deployment["spec"]["template"], sort_keys=True)
        hash_ = hashlib.sha256(template.encode()).hexdigest()[:10]
        revision = str(len(self.replicasets) + 1)
        self.deployment["metadata"].setdefault("annotations", {})[
            "deployment.kubernetes.io/revision"
        ] = revision
        self.replicasets.append(
            {
                "metadata": {
                    "name": f"embedder-{hash_}",
                    "labels": {"pod-template-hash": hash_},
                    "annotations": {"deployment.kubernetes.io/revision": revision},
                }
            }
        )
        replicas = self.deployment["spec"].get("replicas", 1)
        container = self.deployment["spec"]["template"]["spec"]["containers"][0]
        status: dict[str, Any] = {"phase": "Running"}
        if not healthy:
            status["containerStatuses"] = [
                {
                    "name": "server",
                    "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"reason": "Error", "exitCode": 1}},
                }
            ]
        new_pods = [
            {
                "metadata": {
                    "name": f"embedder-{hash_}-{i}",
                    "labels": {"pod-template-hash": hash_},
                },
                "spec": {"nodeName": "a100-mig-0", "containers": [copy.deepcopy(container)]},
                "status": copy.deepcopy(status),
            }
            for i in range(replicas)
        ]
        gen = self.deployment["metadata"]["generation"]
        if healthy:
            self.pods = new_pods
            self.deployment["status"] = {
                "observedGeneration": gen,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "availableReplicas": replicas,
            }
        else:
            old = [
                p for p in self.pods if not p["metadata"]["name"].startswith(f"embedder-{hash_}")
            ]
            self.pods = old + new_pods[:1]
            self.deployment["status"] = {
                "observedGeneration": gen,
                "replicas": replicas + 1,
                "updatedReplicas": 1,
                "availableReplicas": replicas,
            }

    # ports.ClusterReader
    def targets(
        self,
        refs: Sequence[tuple[workloads.WorkloadRef, str, str, str | None]],
        *,
        within: object = None,
    ) -> Mapping[workloads.WorkloadRef, ports.TargetState]:
        body = json.loads(json.dumps(self.deployment))
        out = {}
        for ref, kind, name, container in refs:
            out[ref] = ports.TargetState(
                found=True,
                gpus=targets.read(body, container),
                pods=ports.TargetPods(ref, ref.namespace, kind, name),
                body=body,
                pod_objects=tuple(json.loads(json.dumps(self.pods))),
                replicaset_objects=tuple(json.loads(json.dumps(self.replicasets))),
            )
        return out

    def inventory(self, catalog: gpus.Catalog) -> inventory.Inventory | None:
        return self.stock

    def disruption_budgets(self) -> list[dict[str, Any]] | None:
        return []

    def crash(self, point: str) -> None:
        if point == self.crash_at:
            self.crash_at = None  # the next process runs without it
            raise CrashedError(point)


class FakeApi(base.FakeApi):
    """Status as merge patches leave it; Events keyed like the real recorder (once per key)."""

    def __init__(self) -> None:
        super().__init__()
        self.keyed: dict[str, tuple[str, str, str]] = {}
        self.annotations: dict[str, str] = {}

    def emit(  # type: ignore[override]
        self,
        ref: workloads.WorkloadRef,
        *,
        type_: str,
        reason: str,
        message: str,
        key: str | None = None,
    ) -> None:
        if key is not None:
            self.keyed.setdefault(key, (type_, reason, message))
            return
        self.events.append((type_, reason, message))


@dataclasses.dataclass
class World:
    spec: dict[str, Any]
    cluster: FakeCluster
    api: FakeApi
    source: base.FakeSource
    now: datetime.datetime = NOW

    def sweep(self, minutes: float = 0.5) -> reconcile.SweepSummary | None:
        self.now += datetime.timedelta(minutes=minutes)
        obj = reconcile.WorkloadObject(
            ref=REF,
            spec=self.spec,
            status=self.api.status,
            generation=1,
            uid="gw-uid",
            annotations=dict(self.api.annotations),
        )
        try:
            return reconcile.sweep(
                [obj],
                reader=self.cluster,
                source=self.source,
                writer=self.api,
                recorder=self.api,
                catalog=catalogs.default_catalog(),
                table=catalogs.default_precisions(),
                now=self.now,
                actuator=self.cluster,
                crash=self.cluster.crash,
            )
        except CrashedError:
            return None

    @property
    def status(self) -> dict[str, Any]:
        assert self.api.status is not None
        return self.api.status

    def condition(self, kind: str) -> dict[str, Any]:
        found: dict[str, Any] = next(c for c in self.status["conditions"] if c["type"] == kind)
        return found

    def phase(self) -> str | None:
        return (self.status.get("apply") or {}).get("phase")

    def until(self, phase: str, sweeps: int = 12, minutes: float = 0.5) -> None:
        for _ in range(sweeps):
            self.sweep(minutes)
            if self.phase() == phase:
                return
        raise AssertionError(
            f"phase {self.phase()} after {sweeps} sweeps, not {phase}: {self.status}"
        )


def world(*, approval: str = "Manual", behaviour: str = "healthy", **apply: Any) -> World:
    spec, target, usage = base.example("mig-fits-smaller")
    spec = copy.deepcopy(spec)
    spec["mode"] = "Apply"
    spec["apply"] = {"approval": approval, "verificationWindow": "1h", **apply}
    return World(
        spec=spec,
        cluster=FakeCluster(copy.deepcopy(target), behaviour=behaviour),
        api=FakeApi(),
        source=base.FakeSource({REF: usage}),
    )


def crd_field(raw: Mapping[str, Any]) -> crd.RecordedField:
    return crd.RecordedField.model_validate(raw)


def limits(w: World) -> dict[str, Any]:
    found: dict[str, Any] = w.cluster.deployment["spec"]["template"]["spec"]["containers"][0][
        "resources"
    ]["limits"]
    return found


def approve(w: World) -> str:
    rid = str(w.status["recommendation"]["id"])
    w.api.annotations[planning.APPROVE_ANNOTATION] = rid
    return rid


# --- tests ---------------------------------------------------------------------------------------


def test_manual_mode_changes_nothing_until_the_current_id_is_approved() -> None:
    w = world()
    w.sweep()
    rec = w.status["recommendation"]
    assert (rec["gpuModel"], rec["migProfile"]) == ("A100-80GB", "1g.10gb")
    assert len(rec["id"]) == planning.ID_LENGTH
    applied = w.condition("Applied")
    assert (applied["status"], applied["reason"]) == ("False", "AwaitingApproval")
    assert rec["id"] in applied["message"]
    plan = w.status["plan"]
    assert plan["recommendationId"] == rec["id"]
    assert NEW_RESOURCE in plan["diff"] and OLD_RESOURCE in plan["diff"]
    for _ in range(3):
        w.sweep()
    assert w.cluster.applies == 0 and w.cluster.spec_changes == 0
    # The id is stable from sweep to sweep while nothing changes.
    assert w.status["recommendation"]["id"] == rec["id"]


def test_an_approved_change_is_recorded_applied_rolled_out_verified_and_measured() -> None:
    w = world()
    w.sweep()
    original = copy.deepcopy(w.cluster.deployment["spec"])
    rid = approve(w)
    w.sweep()
    # The record is on status, and the target is patched, in the same sweep.
    state = w.status["apply"]
    assert (state["phase"], state["recommendationId"]) == ("Patching", rid)
    assert any(f["path"].endswith("nvidia.com~1mig-3g.40gb") for f in state["previous"])
    assert limits(w) == {NEW_RESOURCE: "1"} or limits(w) == {NEW_RESOURCE: 1}
    assert w.cluster.spec_changes == 1
    w.until("Verifying")
    assert w.condition("Applied")["status"] == "True"
    assert [k for k in w.api.keyed if k.startswith("applied-")] == [f"applied-{rid}"]
    # Nothing else is applied while it is verified, whatever is recommended meanwhile.
    w.until("Succeeded", sweeps=4, minutes=30)
    assert w.cluster.spec_changes == 1
    realized = w.status["apply"]["realized"]
    assert realized["replicas"] == 4 and realized["gpus"] == 4
    assert realized["monthlyCost"] > 0
    assert w.status["savings"]["realized"] == realized
    assert w.condition("SavingsRealized")["reason"] in ("AsProjected", "DiffersFromProjection")
    assert original != w.cluster.deployment["spec"]


def test_a_target_edited_by_someone_else_after_the_record_is_left_alone() -> None:
    w = world()
    w.sweep()
    approve(w)
    w.cluster.crash_at = "before-patch"
    w.sweep()  # the record is written, the patch not sent
    box = w.cluster.deployment["spec"]["template"]["spec"]["containers"][0]
    box["resources"]["limits"] = {"nvidia.com/mig-2g.20gb": "1"}
    box["resources"]["requests"] = {"nvidia.com/mig-2g.20gb": "1"}
    w.sweep()
    assert w.phase() == "Failed"
    assert "changed before gpu-rightsizer patched it" in w.condition("Applied")["message"]
    assert w.cluster.applies == 0
    assert limits(w) == {"nvidia.com/mig-2g.20gb": "1"}


def test_a_stale_json_patch_is_refused_whole_by_its_tests() -> None:
    w = world()
    w.sweep()
    target = copy.deepcopy(w.cluster.deployment)
    w.api.annotations[planning.APPROVE_ANNOTATION] = str(w.status["recommendation"]["id"])
    w.cluster.crash_at = "before-patch"
    w.sweep()
    state = w.status["apply"]
    fields = [crd_field(f) for f in state["previous"]], [crd_field(f) for f in state["desired"]]
    ops = patches.json_patch(target, *fields)
    changed = copy.deepcopy(target)
    changed["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"][OLD_RESOURCE] = "2"
    with pytest.raises(PatchRefusedError):
        json_patch(changed, ops)
    assert json_patch(target, ops) != target


def test_a_stale_approval_is_refused_with_a_warning_once() -> None:
    w = world()
    w.sweep()
    w.api.annotations[planning.APPROVE_ANNOTATION] = "0123456789"
    w.sweep()
    w.sweep()
    applied = w.condition("Applied")
    assert (applied["status"], applied["reason"]) == ("False", "ApprovalStale")
    assert "0123456789" in applied["message"]
    assert [v[1] for v in w.api.keyed.values()] == ["ApprovalStale"]
    assert w.cluster.applies == 0


def test_a_crash_looping_rollout_is_rolled_back_and_the_candidate_blocked() -> None:
    w = world(behaviour="crashloop")
    w.sweep()
    original = copy.deepcopy(w.cluster.deployment["spec"]["template"])
    rid = approve(w)
    w.until("RolledBack")
    assert w.cluster.deployment["spec"]["template"] == original
    applied = w.condition("Applied")
    assert (applied["status"], applied["reason"]) == ("False", "RolledBack")
    assert "CrashLoopBackOff" in applied["message"]
    blocked = w.status["blocked"]
    assert [b["candidate"] for b in blocked] == [w.status["apply"]["candidate"]]
    assert f"rolledback-{rid}" in w.api.keyed
    # The cooldown holds; the same candidate is not tried again.
    for _ in range(3):
        w.sweep(minutes=60)
    assert w.cluster.spec_changes == 2
    assert w.condition("Applied")["reason"] in ("InCooldown", "CandidateBlocked")


def test_an_approved_allocation_without_room_is_waited_for_then_applied() -> None:
    w = world()
    w.sweep()
    rid = str(w.status["recommendation"]["id"])
    node = STOCK.nodes[0]
    full = dataclasses.replace(node, mig_free={**node.mig_free, "1g.10gb": 0})
    w.cluster.stock = dataclasses.replace(STOCK, nodes=(full,))
    w.api.annotations[planning.APPROVE_ANNOTATION] = rid
    w.sweep()
    applied = w.condition("Applied")
    assert (applied["reason"], w.cluster.applies) == ("WaitingForCapacity", 0)
    assert rid in applied["message"]
    assert not [v for v in w.api.keyed.values() if v[1] == "ApprovalStale"]
    w.cluster.stock = STOCK
    w.sweep()
    assert (w.phase(), w.status["apply"]["recommendationId"]) == ("Patching", rid)
    assert w.cluster.spec_changes == 1


def test_gitops_owned_targets_are_never_patched_and_get_the_patch_on_status() -> None:
    w = world()
    w.cluster.deployment["metadata"].setdefault("labels", {})["argocd.argoproj.io/instance"] = "ml"
    w.sweep()
    approve(w)
    w.sweep()
    applied = w.condition("Applied")
    assert applied["reason"] == "GitOpsManaged" and "Argo CD" in applied["message"]
    assert w.cluster.applies == 0
    patch = w.status["plan"]["patch"]
    assert NEW_RESOURCE in patch and f"{OLD_RESOURCE}: null" in patch


def test_automatic_mode_waits_for_its_window_then_applies() -> None:
    # NOW is 12:00 UTC; the window opens at 13:00.
    w = world(approval="Automatic", window={"start": "13:00", "end": "14:00"}, minConfidence=0)
    w.sweep()
    assert w.condition("Applied")["reason"] == "OutsideWindow"
    assert w.cluster.applies == 0
    w.sweep(minutes=60)
    assert w.phase() == "Patching"
    assert w.cluster.spec_changes == 1


def test_no_permission_to_patch_is_a_condition() -> None:
    w = world()
    w.cluster.may_patch = lambda kind, ns: "the operator may not patch deployments"  # type: ignore[method-assign]
    w.sweep()
    approve(w)
    w.sweep()
    assert w.condition("Applied")["reason"] == "ApplyForbidden"
    assert w.cluster.applies == 0


@pytest.mark.parametrize("point", ["before-status", "before-patch", "after-patch"])
def test_a_crash_at_any_step_of_a_change_still_applies_it_exactly_once(point: str) -> None:
    w = world()
    w.sweep()
    rid = approve(w)
    w.cluster.crash_at = point
    w.sweep()  # dies at the point
    assert w.cluster.crash_at is None, "the crash point was never reached"
    w.until("Verifying")
    assert w.cluster.spec_changes == 1
    assert limits(w) in ({NEW_RESOURCE: "1"}, {NEW_RESOURCE: 1})
    assert list(w.api.keyed) == [f"started-{rid}", f"applied-{rid}"]


@pytest.mark.parametrize("point", ["before-restore", "after-restore"])
def test_a_crash_during_a_rollback_still_restores_the_record(point: str) -> None:
    w = world(behaviour="crashloop")
    w.sweep()
    original = copy.deepcopy(w.cluster.deployment["spec"]["template"])
    rid = approve(w)
    w.cluster.crash_at = point
    w.until("RolledBack")
    assert w.cluster.crash_at is None, "the crash point was never reached"
    assert w.cluster.deployment["spec"]["template"] == original
    assert w.cluster.spec_changes == 2
    assert sorted(w.api.keyed) == sorted([f"started-{rid}", f"rolledback-{rid}"])
