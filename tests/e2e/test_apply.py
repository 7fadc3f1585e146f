"""Apply mode end to end: the operator changes real Deployments, watches, rolls back, measures.

One control plane of its own (hack/devcluster), with kwok GPU nodes of known shape, a fleet
staged by ``hack/staging.py`` (real pods, a day of DCGM/vLLM history in a real Prometheus, a
live exporter) and the operator running as ``gpu-rightsizer run`` with the admin kubeconfig.
The tests run in order, each on workloads of its own:

* ``approved``: plan -> approve -> the Deployment patched by server-side apply -> its new pods
  scheduled onto 1g.10gb MIG slices and Running -> ``Applied=True`` -> realized savings from
  the new pods' series;
* crash injection: the operator killed at a step of a change (``GPU_RIGHTSIZER_CRASH_AT``),
  restarted, and the change applied exactly once, its Events posted once;
* ``crashy``: a variant whose image crash-loops (kwok's fault Stages) -> rolled back within the
  rollout timeout, the Deployment back to its recorded spec, the candidate blocked; once more
  with a crash before the restore;
* ``gitops``: an Argo CD-labelled Deployment is never patched; the patch is on status;
* ``waiter``: no free slice -> waits with a reason, then applies once one is free; a stale
  approval is refused with a condition and an Event.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import yaml
from hack import staging
from hack.devcluster import nodes as kwok_nodes

from gpu_rightsizer.fleetsim import fleets
from tests.e2e import test_inventory as inv
from tests.e2e.test_operator import GPU_RIGHTSIZER, INTERVAL
from tests.support import cluster as cluster_support

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

APPROVE = "gpu-rightsizer.dev/approve"
CRASH_AT = "GPU_RIGHTSIZER_CRASH_AT"
CRASH_POINTS = ("before-status", "before-patch", "after-patch")
EMBEDDERS = ["approved", "gitops", "waiter", *(f"crash-{i}" for i in range(len(CRASH_POINTS)))]
EMBEDDER = """
  - name: {name}
    namespace: {ns}
    parameters: 3.35e8
    precision: fp16
    gpuModel: A100-80GB
    migProfile: 3g.40gb
    traffic: {{shape: constant, low: 0.05, high: 0.1}}
"""
CRASHY = """
  - name: crashy
    namespace: {ns}
    modelName: meta-llama/Llama-3.1-8B-Instruct
    parameters: 8.03e9
    precision: bf16
    gpuModel: H100-80GB
    engine: vllm
    maxModelLen: 8192
    variants:
      - {{name: fp8, precision: fp8, containerPatch: {{image: "vllm/vllm-openai:crashloop",
          args: ["--model", "RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8"]}}}}
    kvCacheBytesPerToken: 131072
    kvCacheUsageAtPeak: 0.3
    traffic: {{shape: diurnal, low: 0.05, high: 0.45, peakHourUtc: 15}}
"""
ONE_G = "nvidia.com/mig-1g.10gb"
THREE_G = "nvidia.com/mig-3g.40gb"
FREE_ONE_G = 8


def nodes() -> list[dict[str, Any]]:
    """A100s cut into 3g.40gb and 1g.10gb slices; H100s whole and a few cut into 3g.40gb."""
    return [
        kwok_nodes.gpu_node(
            "a100-mig-0", "A100-80GB", 8, mig={"3g.40gb": 8, "1g.10gb": FREE_ONE_G}, mig_gpus=8
        ),
        kwok_nodes.gpu_node("h100-0", "H100-80GB", 8),
        kwok_nodes.gpu_node("h100-mig-0", "H100-80GB", 8, mig={"3g.40gb": 4}, mig_gpus=2),
    ]


def gpuworkloads(fleet: fleets.Fleet) -> list[dict[str, Any]]:
    out = []
    for w in fleet.workloads:
        body = staging.gpuworkload(w, mode="Apply")
        spec = body["spec"]
        spec["apply"] = {
            "approval": "Manual",
            "rolloutTimeout": "2m",
            "cooldown": "1h",
            "verificationWindow": "30s",
        }
        if w.name != "crashy":
            spec["policy"]["latency"] = {"guard": "Off"}
        out.append(body)
    return out


@dataclasses.dataclass
class ApplyEnv(inv.Env):
    ns: str = ""


@contextlib.contextmanager
def apply_environment(
    name: str,
    fleet: fleets.Fleet,
    ns: str,
    gpuworkloads: list[dict[str, Any]],
    **extra: Any,
) -> Iterator[ApplyEnv]:
    """:func:`inv.environment` on the A100/H100 nodes of :func:`nodes`, once every GPUWorkload
    of ``ns`` is Ready; ``extra`` goes to it (e.g. ``rollouts``, ``kserve``). Stops the last
    operator started (a test may replace it)."""
    with inv.environment(
        name, fleet, default_fleet=False, staged_nodes=nodes(), gpuworkloads=gpuworkloads, **extra
    ) as e:
        names = [b["metadata"]["name"] for b in gpuworkloads]
        inv.wait_evaluated(e, [(ns, n) for n in names], timeout=240)
        ctx = ApplyEnv(e.kubectl, e.staged, e.operator, e.work, ns)
        try:
            yield ctx
        finally:
            ctx.operator.stop()


@pytest.fixture(scope="module")
def env() -> Iterator[ApplyEnv]:
    ns = f"e2e-apply-{uuid.uuid4().hex[:6]}"
    text = "seed: 23\nworkloads:" + "".join(EMBEDDER.format(name=n, ns=ns) for n in EMBEDDERS)
    text += CRASHY.format(ns=ns)
    fleet = fleets.parse(text, "tests/e2e/test_apply.py")
    with inv.environment(
        "apply", fleet, default_fleet=False, staged_nodes=nodes(), gpuworkloads=gpuworkloads(fleet)
    ) as e:
        e.kubectl("label", "deployment", "-n", ns, "gitops", "argocd.argoproj.io/instance=ml")
        inv.wait_evaluated(e, [(ns, n) for n in [*EMBEDDERS, "crashy"]], timeout=240)
        ctx = ApplyEnv(e.kubectl, e.staged, e.operator, e.work, ns)
        try:
            yield ctx
        finally:
            ctx.operator.stop()  # the last one started (restart() replaces it)


def cli(e: ApplyEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GPU_RIGHTSIZER), *args, "--kubeconfig", str(e.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def deployment(e: ApplyEnv, name: str) -> dict[str, Any]:
    found: dict[str, Any] = e.kubectl.json(
        "get", "deployment", "-n", e.ns, name, "--show-managed-fields"
    )
    return found


def container(dep: Mapping[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = dep["spec"]["template"]["spec"]["containers"][0]
    return found


def replicasets(e: ApplyEnv, name: str) -> list[dict[str, Any]]:
    items = e.kubectl.json("get", "replicasets", "-n", e.ns)["items"]
    return [
        rs
        for rs in items
        if any(o.get("name") == name for o in rs["metadata"].get("ownerReferences", []))
    ]


def events(e: ApplyEnv, name: str) -> list[dict[str, Any]]:
    items = e.kubectl.json(
        "get", "events", "-n", e.ns, "--field-selector", f"involvedObject.name={name}"
    )["items"]
    return [i for i in items if i["involvedObject"].get("kind") == "GPUWorkload"]


def reasons(e: ApplyEnv, name: str) -> list[str]:
    return sorted(i["reason"] for i in events(e, name))


def applied(e: ApplyEnv, name: str) -> dict[str, Any]:
    return inv.condition(e.status(e.ns, name), "Applied")


def wait_phase(e: ApplyEnv, name: str, phases: set[str], timeout: float = 180) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        status = e.status(e.ns, name)
        phase = (status.get("apply") or {}).get("phase")
        return status if phase in phases else None

    found: dict[str, Any] = cluster_support.eventually(
        reached, timeout=timeout, interval=1.0, what=f"{name}: apply phase in {sorted(phases)}"
    )
    return found


def wait_reason(e: ApplyEnv, name: str, reason: str, timeout: float = 120) -> dict[str, Any]:
    found: dict[str, Any] = cluster_support.eventually(
        lambda: (c := applied(e, name)) and c.get("reason") == reason and c,
        timeout=timeout,
        interval=1.0,
        what=f"{name}: Applied reason {reason}",
    )
    return found


def approve(e: ApplyEnv, name: str) -> str:
    """Approve the current recommendation the way ``gpu-rightsizer approve`` does."""
    rid = str(e.status(e.ns, name)["recommendation"]["id"])
    e.kubectl("annotate", "--overwrite", "gpuworkload", "-n", e.ns, name, f"{APPROVE}={rid}")
    return rid


def restart(e: ApplyEnv, **extra_env: str) -> None:
    e.operator.stop()
    e.operator = staging.Operator(
        e.kubeconfig,
        e.staged.prometheus_url,
        e.operator.log,
        interval=INTERVAL,
        extra_env=dict(extra_env),
    )
    e.operator.start()


# ---------------------------------------------------------------------------------------------


def test_plan_approve_apply_verify_and_realized_savings(env: ApplyEnv) -> None:
    ns = env.ns
    status = env.status(ns, "approved")
    rec = status["recommendation"]
    assert (rec["gpuModel"], rec["migProfile"]) == ("A100-80GB", "1g.10gb")
    assert wait_reason(env, "approved", "AwaitingApproval")["status"] == "False"
    before = deployment(env, "approved")
    # The plan, like kubectl diff, and as a patch ready to commit.
    diff = cli(env, "plan", "-n", ns, "approved")
    assert diff.returncode == 0, diff.stderr
    assert f"-            {THREE_G}" in diff.stdout.replace('"', "") or THREE_G in diff.stdout
    assert ONE_G in diff.stdout
    as_yaml = cli(env, "plan", "-n", ns, "approved", "-o", "yaml")
    patch = yaml.safe_load(as_yaml.stdout)
    limits = patch["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits in ({ONE_G: "1", THREE_G: None}, {ONE_G: 1, THREE_G: None})
    # Nothing changed while waiting for approval.
    assert deployment(env, "approved")["metadata"]["generation"] == before["metadata"]["generation"]

    proc = cli(env, "approve", "-n", ns, "approved")
    assert proc.returncode == 0, proc.stderr
    rid = str(rec["id"])
    assert f"approved (id {rid})" in proc.stdout
    status = wait_phase(env, "approved", {"Verifying", "Succeeded"})
    dep = deployment(env, "approved")
    assert dep["metadata"]["generation"] == before["metadata"]["generation"] + 1
    got = container(dep)["resources"]
    assert got["limits"] == {ONE_G: "1"} and got["requests"] == {ONE_G: "1"}
    # Our field manager owns exactly what it changed; everything else is as it was.
    managers = {m["manager"] for m in dep["metadata"]["managedFields"]}
    assert "gpu-rightsizer" in managers
    assert container(dep)["image"] == container(before)["image"]
    assert (
        dep["spec"]["template"]["spec"]["tolerations"]
        == (before["spec"]["template"]["spec"]["tolerations"])
    )
    pods = staging.serving_pods(env.kubectl, ns, "approved")
    assert pods and all(p.mig_profile == "1g.10gb" and p.node == "a100-mig-0" for p in pods)
    assert applied(env, "approved")["status"] == "True"
    assert status["apply"]["recommendationId"] == rid
    # Realized savings from the new pods' series, after the verification window.
    staging.retarget(env.staged, env.kubectl, ns, "approved")
    status = wait_phase(env, "approved", {"Succeeded"}, timeout=180)
    realized = status["savings"]["realized"]
    assert realized["replicas"] == len(pods)
    assert realized["monthlyCost"] > 0
    assert realized["powerWatts"] is not None and realized["powerWatts"] > 0
    assert inv.condition(status, "SavingsRealized")["status"] in ("True", "False")
    cluster_support.eventually(
        lambda: {"ApplyStarted", "Applied", "SavingsRealized"} <= set(reasons(env, "approved")),
        timeout=30,
        interval=1.0,
        what="the apply Events",
    )
    for event in events(env, "approved"):
        if event["reason"] in ("ApplyStarted", "Applied", "SavingsRealized"):
            assert event.get("count", 1) == 1, event


@pytest.mark.parametrize("index", range(len(CRASH_POINTS)))
def test_a_crash_at_each_step_applies_the_change_exactly_once(env: ApplyEnv, index: int) -> None:
    _ns, name, point = env.ns, f"crash-{index}", CRASH_POINTS[index]
    wait_reason(env, name, "AwaitingApproval")
    generation = deployment(env, name)["metadata"]["generation"]
    restart(env, **{CRASH_AT: point})
    approve(env, name)
    assert env.operator.process is not None
    code = env.operator.process.wait(timeout=120)
    assert code == 86, f"the operator should have died at {point} (exit {code})"
    restart(env)
    wait_phase(env, name, {"Verifying", "Succeeded"})
    dep = deployment(env, name)
    assert dep["metadata"]["generation"] == generation + 1
    assert container(dep)["resources"]["limits"] == {ONE_G: "1"}
    assert len(replicasets(env, name)) == 2  # the original and exactly one new one
    started = [e for e in events(env, name) if e["reason"] == "ApplyStarted"]
    assert len(started) == 1 and started[0].get("count", 1) == 1


def test_a_crash_looping_variant_is_rolled_back_and_blocked(env: ApplyEnv) -> None:
    ns = env.ns
    rec = env.status(ns, "crashy")["recommendation"]
    assert rec.get("variant") == "fp8", rec
    before = deployment(env, "crashy")
    original = copy.deepcopy(before["spec"]["template"])
    # Die once just before the restore: the record on status must still bring it back.
    restart(env, **{CRASH_AT: "before-restore"})
    approve(env, "crashy")
    assert env.operator.process is not None
    assert env.operator.process.wait(timeout=240) == 86
    restart(env)
    status = wait_phase(env, "crashy", {"RolledBack"}, timeout=240)
    dep = deployment(env, "crashy")
    assert dep["spec"]["template"] == original
    condition = applied(env, "crashy")
    assert (condition["status"], condition["reason"]) == ("False", "RolledBack")
    assert "CrashLoopBackOff" in condition["message"]
    assert [b["candidate"] for b in status["blocked"]] == [status["apply"]["candidate"]]
    cluster_support.eventually(
        lambda: "RolledBack" in reasons(env, "crashy"), timeout=30, what="RolledBack Event"
    )
    rolled = [e for e in events(env, "crashy") if e["reason"] == "RolledBack"]
    assert len(rolled) == 1 and rolled[0]["type"] == "Warning"
    # Pods of the restored template run again.
    cluster_support.eventually(
        lambda: staging.serving_pods(env.kubectl, ns, "crashy"),
        timeout=120,
        what="crashy's restored pods Running",
    )


def test_gitops_owned_target_is_untouched_with_the_patch_on_status(env: ApplyEnv) -> None:
    ns = env.ns
    before = deployment(env, "gitops")
    condition = wait_reason(env, "gitops", "GitOpsManaged")
    assert "Argo CD" in condition["message"]
    rid = env.status(ns, "gitops")["recommendation"]["id"]
    env.kubectl("annotate", "gpuworkload", "-n", ns, "gitops", f"{APPROVE}={rid}")
    patch = yaml.safe_load(env.status(ns, "gitops")["plan"]["patch"])
    assert ONE_G in json.dumps(patch)
    # Approved or not, it stays GitOpsManaged and the Deployment is never patched.
    for _ in range(3):
        wait_reason(env, "gitops", "GitOpsManaged")
    assert deployment(env, "gitops")["metadata"]["generation"] == before["metadata"]["generation"]
    assert "gpu-rightsizer" not in {
        m["manager"] for m in deployment(env, "gitops")["metadata"]["managedFields"]
    }


def test_no_free_capacity_waits_then_applies_and_a_stale_approval_is_refused(
    env: ApplyEnv,
) -> None:
    ns = env.ns
    # A stale approval: refused with a condition and a Warning Event, nothing changed.
    env.kubectl("annotate", "gpuworkload", "-n", ns, "waiter", f"{APPROVE}=0000000000")
    condition = wait_reason(env, "waiter", "ApprovalStale")
    assert "0000000000" in condition["message"]
    cluster_support.eventually(
        lambda: "ApprovalStale" in reasons(env, "waiter"), timeout=30, what="ApprovalStale Event"
    )
    # The recommendation a person reviewed; then every free 1g.10gb slice is taken, and the
    # approval comes: it waits for capacity instead of acting or being refused.
    rid = env.status(ns, "waiter")["recommendation"]["id"]
    generation = deployment(env, "waiter")["metadata"]["generation"]
    env.kubectl.apply([filler_deployment(ns, free_slices(env))])
    cluster_support.eventually(
        lambda: free_slices(env) == 0, timeout=120, what="every 1g.10gb slice taken"
    )
    env.kubectl("annotate", "--overwrite", "gpuworkload", "-n", ns, "waiter", f"{APPROVE}={rid}")
    condition = wait_reason(env, "waiter", "WaitingForCapacity")
    assert rid in condition["message"] and "no node has it free" in condition["message"]
    assert deployment(env, "waiter")["metadata"]["generation"] == generation
    env.kubectl("delete", "deployment", "-n", ns, "filler", "--wait=true")
    status = wait_phase(env, "waiter", {"Verifying", "Succeeded"}, timeout=180)
    assert status["apply"]["recommendationId"] == rid


def free_slices(e: ApplyEnv) -> int:
    node = e.kubectl.json("get", "node", "a100-mig-0")
    total = int(node["status"]["allocatable"].get(ONE_G, 0))
    pods = e.kubectl.json("get", "pods", "-A", "--field-selector", "spec.nodeName=a100-mig-0")
    used = 0
    for p in pods["items"]:
        if p["status"].get("phase") in ("Succeeded", "Failed"):
            continue
        for c in p["spec"]["containers"]:
            used += int((c.get("resources", {}).get("requests") or {}).get(ONE_G, 0))
    return total - used


def filler_deployment(ns: str, replicas: int) -> dict[str, Any]:
    labels = {"app": "filler"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "filler", "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "filler",
                            "image": "registry.example/filler:1",
                            "resources": {"limits": {ONE_G: "1"}, "requests": {ONE_G: "1"}},
                        }
                    ]
                },
            },
        },
    }
