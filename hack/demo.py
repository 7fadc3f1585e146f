#!/usr/bin/env python3
"""``make demo``: gpu-rightsizer end to end on the local control plane.

Starts the local control plane (hack/cluster), stages the simulated fleet of
``hack/fleet/fleet.yaml`` with days of DCGM/vLLM history in a real Prometheus (hack/staging.py),
runs the operator against both, waits until every GPUWorkload has a status, prints
``kubectl get gpuworkloads -A`` and one ``kubectl describe``; then lets it act on one workload
(``mode: Apply``, ``gpu-rightsizer plan``, ``gpu-rightsizer approve``, the rollout onto the new
GPUs) and stops everything it started.
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "operator")]

from hack import staging  # noqa: E402
from hack.devcluster import plane  # noqa: E402

from gpu_rightsizer.fleetsim import fleets  # noqa: E402


def all_evaluated(kubectl: staging.Kubectl, expected: int) -> bool:
    items = kubectl.json("get", "gpuworkloads", "-A")["items"]
    done = [
        i
        for i in items
        if any(c["type"] == "Ready" for c in (i.get("status") or {}).get("conditions", []))
    ]
    return len(done) >= expected


def _applied(kubectl: staging.Kubectl, namespace: str, name: str) -> dict[str, str] | None:
    status = kubectl.json("get", "gpuworkload", "-n", namespace, name).get("status") or {}
    for c in status.get("conditions", []):
        if c["type"] == "Applied":
            return {k: str(c.get(k, "")) for k in ("status", "reason", "message")}
    return None


def act(kubectl: staging.Kubectl, kubeconfig: pathlib.Path, namespace: str, name: str) -> None:
    """Let the operator act on one workload: Apply mode, the plan, an approval, the rollout."""
    cli = [str(REPO_ROOT / ".venv" / "bin" / "gpu-rightsizer")]
    where = ["-n", namespace, name, "--kubeconfig", str(kubeconfig)]
    print(
        f"$ kubectl patch gpuworkload -n {namespace} {name} --type merge "
        '-p \'{"spec":{"mode":"Apply"}}\''
    )
    print(
        kubectl(
            "patch",
            "gpuworkload",
            "-n",
            namespace,
            name,
            "--type",
            "merge",
            "-p",
            '{"spec":{"mode":"Apply"}}',
        )
    )
    staging.eventually(
        lambda: (_applied(kubectl, namespace, name) or {}).get("reason") == "AwaitingApproval",
        timeout=120,
        what=f"{namespace}/{name} to wait for approval",
    )
    for command in (["plan", *where], ["approve", *where]):
        print(f"$ gpu-rightsizer {' '.join(command[:4])}")
        done = subprocess.run([*cli, *command], capture_output=True, text=True, check=False)
        print(done.stdout + done.stderr)
        if done.returncode != 0:
            raise SystemExit(f"gpu-rightsizer {command[0]} failed")
    staging.say("waiting for the rollout onto the recommended GPUs")
    staging.eventually(
        lambda: (_applied(kubectl, namespace, name) or {}).get("status") == "True",
        timeout=180,
        what=f"{namespace}/{name} to be applied",
    )
    print(f"$ kubectl get gpuworkload -n {namespace} {name}")
    print(kubectl("get", "gpuworkload", "-n", namespace, name))
    print(f"$ kubectl get pods -n {namespace} -o wide")
    print(kubectl("get", "pods", "-n", namespace, "-o", "wide"))
    applied = _applied(kubectl, namespace, name) or {}
    print(f"Applied={applied.get('status')} ({applied.get('reason')}): {applied.get('message')}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fleet", type=pathlib.Path, default=REPO_ROOT / "hack/fleet/fleet.yaml")
    parser.add_argument("--days", type=float, default=3.0, help="days of simulated history")
    parser.add_argument("--describe", default="ml-serving/chat", help="NAMESPACE/NAME to describe")
    parser.add_argument("--keep", action="store_true", help="leave everything running")
    parser.add_argument(
        "--act",
        default="sandbox/playground",
        help="NAMESPACE/NAME to switch to Apply mode, plan and approve ('' to skip)",
    )
    args = parser.parse_args()

    work = plane.cache_dir() / "demo"
    work.mkdir(parents=True, exist_ok=True)
    cluster = [sys.executable, str(REPO_ROOT / "hack" / "cluster")]
    was_up = (
        subprocess.run([*cluster, "status"], capture_output=True, text=True, check=False).returncode
        == 0
    )
    staging.say("starting the local control plane (hack/cluster up)")
    subprocess.run([*cluster, "up"], check=True)
    kubeconfig = pathlib.Path(
        subprocess.run(
            [*cluster, "kubeconfig"], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    tools = plane.find_tools(["kubectl"])
    kubectl = staging.Kubectl(tools["kubectl"], kubeconfig)
    fleet = fleets.load(args.fleet)
    staged = staging.stage(kubectl, fleet, work_dir=work, history_days=args.days)
    operator = None
    try:
        staging.say(f"starting the operator (Prometheus at {staged.prometheus_url})")
        log = work / "operator.log"
        log.unlink(missing_ok=True)
        operator = staging.Operator(kubeconfig, staged.prometheus_url, log).start()
        staging.eventually(
            lambda: all_evaluated(kubectl, len(fleet.workloads)),
            timeout=180,
            what="every GPUWorkload to get a status",
        )
        print()
        print("$ kubectl get gpuworkloads -A")
        print(kubectl("get", "gpuworkloads", "-A"))
        namespace, name = args.describe.split("/", 1)
        print(f"$ kubectl describe gpuworkload -n {namespace} {name}")
        print(kubectl("describe", "gpuworkload", "-n", namespace, name))
        if args.act:
            act(kubectl, kubeconfig, *args.act.split("/", 1))
        print(f"(operator log: {work / 'operator.log'})")
        return 0
    finally:
        if not args.keep:
            staging.say("stopping the operator, Prometheus and the simulator")
            if operator is not None:
                operator.stop()
            staged.stop()
            if not was_up:
                staging.say("stopping the local control plane (hack/cluster down)")
                subprocess.run([*cluster, "down"], check=False)


if __name__ == "__main__":
    sys.exit(main())
