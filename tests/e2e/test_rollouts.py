"""GPUWorkloads that target an Argo Rollout, end to end, with the real Argo Rollouts controller.

One control plane of its own with the Argo Rollouts CRDs and controller (``rollouts-controller``
built from its Go module by ``make tools``, run out of cluster). Two workloads are staged as
Rollouts with a canary strategy (the controller makes their ReplicaSets, kube-controller-manager
their pods, kwok runs them), with a day of history for those pods in a real Prometheus:

* ``canary``: an embedder on a 3g.40gb slice -> a 1g.10gb recommendation read from the
  Rollout's template -> approved -> the Rollout patched, the controller rolls it out, the new
  pods run on 1g.10gb slices -> ``Applied=True``;
* ``crashy``: a variant whose image crash-loops -> rolled back: the Rollout's template is back
  to what it was and the candidate blocked;
* the Rollout CRD removed (Argo Rollouts uninstalled): the GPUWorkloads say so on
  ``TargetNotFound`` and ``Ready``, and the operator keeps sweeping.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hack import staging

from gpu_rightsizer.fleetsim import fleets
from gpu_rightsizer.manifests import kinds
from tests.e2e import test_apply as apply_e2e, test_inventory as inv
from tests.support import cluster as cluster_support

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

ONE_G = apply_e2e.ONE_G
NAMES = ("canary", "crashy")


def rollout_gpuworkloads(fleet: fleets.Fleet) -> list[dict[str, Any]]:
    """The Apply-mode GPUWorkloads of the Apply tests, each pointed at its Rollout."""
    out = apply_e2e.gpuworkloads(fleet)
    for body in out:
        ref = body["spec"]["targetRef"]
        ref["apiVersion"], ref["kind"] = kinds.ROLLOUT.api_version, kinds.ROLLOUT.kind
    return out


@pytest.fixture(scope="module")
def env() -> Iterator[apply_e2e.ApplyEnv]:
    ns = f"e2e-rollouts-{uuid.uuid4().hex[:6]}"
    text = "seed: 29\nworkloads:" + apply_e2e.EMBEDDER.format(name="canary", ns=ns)
    text += apply_e2e.CRASHY.format(ns=ns)
    fleet = fleets.parse(text, "tests/e2e/test_rollouts.py")
    with apply_e2e.apply_environment(
        "rollouts", fleet, ns, rollout_gpuworkloads(fleet), rollouts=[(ns, n) for n in NAMES]
    ) as ctx:
        yield ctx


def rollout(e: apply_e2e.ApplyEnv, name: str) -> dict[str, Any]:
    found: dict[str, Any] = e.kubectl.json("get", "rollouts.argoproj.io", "-n", e.ns, name)
    return found


def limits(body: Mapping[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = apply_e2e.container(body)["resources"]["limits"]
    return found


# ---------------------------------------------------------------------------------------------


def test_an_approved_change_to_a_rollout_is_rolled_out_by_argo(
    env: apply_e2e.ApplyEnv,
) -> None:
    status = env.status(env.ns, "canary")
    assert inv.condition(status, "TargetNotFound")["status"] == "False"
    rec = status["recommendation"]
    assert (rec["gpuModel"], rec["migProfile"]) == ("A100-80GB", "1g.10gb")
    assert apply_e2e.wait_reason(env, "canary", "AwaitingApproval")["status"] == "False"
    before = rollout(env, "canary")
    assert limits(before) == {apply_e2e.THREE_G: "1"}
    # The plan is a patch of the Rollout's template.
    plan = apply_e2e.cli(env, "plan", "-n", env.ns, "canary")
    assert plan.returncode == 0, plan.stderr
    assert ONE_G in plan.stdout

    rid = apply_e2e.approve(env, "canary")
    status = apply_e2e.wait_phase(env, "canary", {"Verifying", "Succeeded"}, timeout=240)
    assert status["apply"]["recommendationId"] == rid
    after = rollout(env, "canary")
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    assert limits(after) == {ONE_G: "1"}
    assert apply_e2e.container(after)["image"] == apply_e2e.container(before)["image"]
    # Argo finished the rollout: the new ReplicaSet is the stable one, and its pods are on
    # 1g.10gb slices.
    assert after["status"]["phase"] == "Healthy"
    assert after["status"]["stableRS"] == after["status"]["currentPodHash"]
    pods = cluster_support.eventually(
        lambda: [
            p
            for p in staging.serving_pods(env.kubectl, env.ns, "canary", kind="Rollout")
            if p.mig_profile == "1g.10gb"
        ],
        timeout=60,
        what="canary's pods on 1g.10gb slices",
    )
    assert pods and all(p.node == "a100-mig-0" for p in pods)
    assert apply_e2e.applied(env, "canary")["status"] == "True"
    cluster_support.eventually(
        lambda: {"ApplyStarted", "Applied"} <= set(apply_e2e.reasons(env, "canary")),
        timeout=30,
        what="the apply Events",
    )


def test_a_crash_looping_variant_on_a_rollout_is_rolled_back(env: apply_e2e.ApplyEnv) -> None:
    status = env.status(env.ns, "crashy")
    assert status["recommendation"].get("variant") == "fp8", status["recommendation"]
    original = copy.deepcopy(rollout(env, "crashy")["spec"]["template"])
    apply_e2e.approve(env, "crashy")
    status = apply_e2e.wait_phase(env, "crashy", {"RolledBack"}, timeout=300)
    assert rollout(env, "crashy")["spec"]["template"] == original
    condition = apply_e2e.applied(env, "crashy")
    assert (condition["status"], condition["reason"]) == ("False", "RolledBack")
    assert "CrashLoopBackOff" in condition["message"]
    assert [b["candidate"] for b in status["blocked"]] == [status["apply"]["candidate"]]
    # Argo brings the restored template's pods back.
    cluster_support.eventually(
        lambda: rollout(env, "crashy")["status"].get("phase") == "Healthy",
        timeout=180,
        what="crashy's Rollout Healthy again",
    )


def test_without_argo_rollouts_the_gpuworkloads_say_so(env: apply_e2e.ApplyEnv) -> None:
    env.kubectl("delete", "crd", f"{kinds.ROLLOUT.plural}.{kinds.ROLLOUT.group}", "--wait=true")

    def reported() -> dict[str, Any] | None:
        status = env.status(env.ns, "crashy")
        missing = inv.condition(status, "TargetNotFound")
        return status if missing.get("status") == "True" else None

    status = cluster_support.eventually(
        reported, timeout=120, interval=1.0, what="TargetNotFound=True on crashy"
    )
    message = inv.condition(status, "TargetNotFound")["message"]
    assert "Argo Rollouts is not installed" in message, message
    ready = inv.condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "TargetNotFound")
    # The operator is still up and sweeping.
    assert env.operator.alive()
    sweeps = len(env.operator.sweeps())
    cluster_support.eventually(
        lambda: len(env.operator.sweeps()) > sweeps, timeout=60, what="another sweep"
    )
