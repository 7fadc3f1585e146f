"""The Helm chart on the real local control plane (hack/cluster), the way the README installs it.

- ``helm install`` creates the CRD, the RBAC, the ServiceAccount, the catalog ConfigMap, the
  metrics Service and the Deployment (whose pod kwok reports Running: there is no registry with the
  image here, and the pod is not what is being tested);
- ``helm upgrade`` with changed values keeps every existing GPUWorkload;
- ``helm uninstall`` with ``crds.keep`` leaves the CRD and the GPUWorkloads;
- RBAC is proven against the API server, not read from YAML: a token for the chart's
  ServiceAccount comes from the TokenRequest API (``kubectl create token``); ``kubectl auth
  can-i`` and real requests with it show what is granted and what is refused (Secrets,
  ConfigMaps, patching Deployments while apply is disabled, other namespaces in namespaced
  mode); and the operator process itself runs locally as that ServiceAccount, with the exact
  arguments of the installed Deployment, against a small fleet staged with hack/staging.py and a
  real Prometheus, until every GPUWorkload it watches is Ready — without one permission error.

The CRD is cluster-wide and other tests apply it with kubectl, so before installing with
``crds.enabled`` the test lets Helm adopt an existing CRD (the ownership label and annotations
Helm looks for), as a user who installed it with kubectl first would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import re
import shlex
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
import yaml
from hack import staging

from gpu_rightsizer.fleetsim import fleets
from tests.support.cluster import Cluster, KubectlError, eventually

pytestmark = pytest.mark.cluster

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "gpu-rightsizer"
CRD_NAME = "gpuworkloads.gpu-rightsizer.dev"
PROMETHEUS_URL = "http://prometheus.monitoring.svc:9090"
OPERATOR = ROOT / ".venv" / "bin" / "gpu-rightsizer"
README = ROOT / "README.md"

# Permission problems as the API server, the kubernetes client and kopf report them.
PERMISSION_TROUBLE = re.compile(r"forbidden|\b403\b|not enough permissions", re.IGNORECASE)
# Also a 403, but not about RBAC: a cluster-wide operator sees the GPUWorkloads of namespaces
# that other tests are deleting, and may not post Events there.
NAMESPACE_TERMINATING = re.compile(r"because it is being terminated")


# --- Helm releases -------------------------------------------------------------------------------


@dataclasses.dataclass
class Release:
    cluster: Cluster
    name: str
    namespace: str
    workdir: pathlib.Path

    @property
    def account(self) -> str:
        return f"{self.name}-gpu-rightsizer"

    def _values_file(self, values: Mapping[str, Any]) -> str:
        path = self.workdir / f"values-{uuid.uuid4().hex[:8]}.yaml"
        path.write_text(
            yaml.safe_dump({"prometheus": {"url": PROMETHEUS_URL}, **values}), encoding="utf-8"
        )
        return str(path)

    def install(self, values: Mapping[str, Any] | None = None) -> str:
        return self.cluster.helm(
            "install",
            self.name,
            str(CHART),
            "--namespace",
            self.namespace,
            "--values",
            self._values_file(values or {}),
            "--wait",
            "--timeout",
            "180s",
        ).stdout

    def upgrade(self, values: Mapping[str, Any]) -> str:
        return self.cluster.helm(
            "upgrade",
            self.name,
            str(CHART),
            "--namespace",
            self.namespace,
            "--values",
            self._values_file(values),
            "--wait",
            "--timeout",
            "180s",
        ).stdout

    def uninstall(self) -> None:
        self.cluster.helm("uninstall", self.name, "--namespace", self.namespace, "--wait")

    def deployment(self) -> dict[str, Any]:
        found: dict[str, Any] = self.cluster.kubectl_json(
            "get", "deployment", self.account, "-n", self.namespace
        )
        return found

    def token(self) -> str:
        """A ServiceAccount token from the TokenRequest API."""
        return self.cluster.kubectl(
            "create", "token", self.account, "-n", self.namespace, "--duration=1h"
        ).stdout.strip()


@pytest.fixture
def release(cluster: Cluster, namespace: str, tmp_path: pathlib.Path) -> Iterator[Release]:
    """A release name in the test's namespace; uninstalled afterwards if still there."""
    made = Release(cluster, f"gr-{uuid.uuid4().hex[:6]}", namespace, tmp_path)
    try:
        yield made
    finally:
        if cluster.helm("status", made.name, "-n", namespace, check=False).returncode == 0:
            cluster.helm("uninstall", made.name, "-n", namespace, "--wait", check=False)


def let_helm_adopt_the_crd(release: Release) -> None:
    """Mark an existing CRD (installed by kubectl, or by an earlier release) for this release."""
    cluster = release.cluster
    if cluster.kubectl("get", "crd", CRD_NAME, check=False).returncode != 0:
        return
    cluster.kubectl("label", "crd", CRD_NAME, "app.kubernetes.io/managed-by=Helm", "--overwrite")
    cluster.kubectl(
        "annotate",
        "crd",
        CRD_NAME,
        f"meta.helm.sh/release-name={release.name}",
        f"meta.helm.sh/release-namespace={release.namespace}",
        "--overwrite",
    )


def gpuworkload(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "gpu-rightsizer.dev/v1alpha1",
        "kind": "GPUWorkload",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}},
    }


def exists(cluster: Cluster, *args: str) -> bool:
    return cluster.kubectl("get", *args, check=False).returncode == 0


def available(cluster: Cluster, name: str, namespace: str) -> dict[str, Any]:
    """The Deployment, once its status says one replica is available."""

    def check() -> dict[str, Any] | None:
        found: dict[str, Any] = cluster.kubectl_json("get", "deployment", name, "-n", namespace)
        return found if (found.get("status") or {}).get("availableReplicas") == 1 else None

    return eventually(check, timeout=90, what=f"deployment {namespace}/{name} to be available")


# --- install, upgrade, uninstall ------------------------------------------------------------------


def test_install_creates_the_crd_rbac_configmap_service_and_deployment(
    cluster: Cluster, release: Release
) -> None:
    let_helm_adopt_the_crd(release)
    notes = release.install({"catalog": {"currency": "EUR", "pue": 1.2}})
    assert "kubectl get gpuw -A" in notes

    def established() -> dict[str, Any] | None:
        crd: dict[str, Any] = cluster.kubectl_json("get", "crd", CRD_NAME)
        conditions = {c["type"]: c["status"] for c in crd.get("status", {}).get("conditions", [])}
        return crd if conditions.get("Established") == "True" else None

    crd = eventually(established, timeout=60, what="the CRD to be Established")
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == release.name
    assert crd["spec"]["names"]["shortNames"] == ["gpuw"]

    name, ns = release.account, release.namespace
    assert exists(cluster, "serviceaccount", name, "-n", ns)
    role = cluster.kubectl_json("get", "clusterrole", name)
    assert {r["apiGroups"][0] for r in role["rules"]} >= {"gpu-rightsizer.dev", "apps", ""}
    binding = cluster.kubectl_json("get", "clusterrolebinding", name)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": ns}]
    configmap = cluster.kubectl_json("get", "configmap", f"{name}-catalog", "-n", ns)
    assert yaml.safe_load(configmap["data"]["overrides.yaml"]) == {"currency": "EUR", "pue": 1.2}
    service = cluster.kubectl_json("get", "service", f"{name}-metrics", "-n", ns)
    assert service["spec"]["ports"][0]["port"] == 8000

    deployment = release.deployment()
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    (operator,) = deployment["spec"]["template"]["spec"]["containers"]
    assert f"--prometheus-url={PROMETHEUS_URL}" in operator["args"]
    assert operator["securityContext"]["readOnlyRootFilesystem"] is True
    # The (kwok) pod becomes Running and the Deployment available (helm --wait waits for most
    # of it; the controller's status update may land just after).
    available(cluster, release.account, ns)
    # The short name from NOTES works.
    cluster.kubectl("get", "gpuw", "-A")


def test_upgrade_with_changed_values_keeps_existing_gpuworkloads(
    cluster: Cluster, release: Release
) -> None:
    let_helm_adopt_the_crd(release)
    release.install()
    ns = release.namespace
    cluster.apply(gpuworkload("chat", ns), gpuworkload("embed", ns))
    before = {
        item["metadata"]["name"]: item["metadata"]["uid"]
        for item in cluster.kubectl_json("get", "gpuworkloads", "-n", ns)["items"]
    }
    assert sorted(before) == ["chat", "embed"]
    old_hash = release.deployment()["spec"]["template"]["metadata"]["annotations"]

    release.upgrade(
        {
            "operator": {"interval": "1m", "logLevel": "DEBUG"},
            "catalog": {"currency": "EUR"},
            "apply": {"enabled": True},
        }
    )

    after = {
        item["metadata"]["name"]: item["metadata"]["uid"]
        for item in cluster.kubectl_json("get", "gpuworkloads", "-n", ns)["items"]
    }
    assert after == before
    deployment = release.deployment()
    (operator,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "--interval=1m" in operator["args"]
    assert "--log-level=DEBUG" in operator["args"]
    assert deployment["spec"]["template"]["metadata"]["annotations"] != old_hash
    role = cluster.kubectl_json("get", "clusterrole", release.account)
    assert any("patch" in r["verbs"] and "deployments" in r["resources"] for r in role["rules"])
    history = json.loads(cluster.helm("history", release.name, "-n", ns, "-o", "json").stdout)
    assert [h["revision"] for h in history] == [1, 2]


def test_uninstall_with_crds_keep_leaves_the_crd_and_the_gpuworkloads(
    cluster: Cluster, release: Release
) -> None:
    let_helm_adopt_the_crd(release)
    release.install()
    ns, name = release.namespace, release.account
    cluster.apply(gpuworkload("chat", ns))
    uid = cluster.kubectl_json("get", "gpuworkload", "chat", "-n", ns)["metadata"]["uid"]

    release.uninstall()

    assert exists(cluster, "crd", CRD_NAME)
    assert cluster.kubectl_json("get", "gpuworkload", "chat", "-n", ns)["metadata"]["uid"] == uid
    for kind, namespaced in (
        ("deployment", True),
        ("serviceaccount", True),
        ("configmap", True),
        ("clusterrole", False),
        ("clusterrolebinding", False),
    ):
        object_name = f"{name}-catalog" if kind == "configmap" else name
        where = ["-n", ns] if namespaced else []
        assert not exists(cluster, kind, object_name, *where), f"{kind} {object_name} is left"
    assert not exists(cluster, "service", f"{name}-metrics", "-n", ns)


def readme_commands() -> list[list[str]]:
    """The helm and kubectl commands of the README's "Install on a cluster" section, in order."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Install on a cluster\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.DOTALL):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            if line.startswith(("helm ", "kubectl ")):
                commands.append(shlex.split(line))
    return commands


def test_the_readme_install_steps_work(cluster: Cluster, namespace: str) -> None:
    """The README's commands, in the test's namespace; adopting the CRD first when it exists."""
    commands = readme_commands()
    assert [c[:2] for c in commands if c[0] == "helm"] == [["helm", "install"]]

    def here(argv: list[str]) -> list[str]:
        """The command with this test's namespace, and the chart's path from the repository."""
        out = []
        for before, arg in zip(["", *argv], argv, strict=False):
            if before in ("-n", "--namespace") and arg == "gpu-rightsizer":
                out.append(namespace)
            elif arg == "helm/gpu-rightsizer":
                out.append(str(CHART))
            else:
                out.append(arg.replace("namespace=gpu-rightsizer", f"namespace={namespace}"))
        return out

    adopting = [c for c in commands if c[1] in ("label", "annotate")]
    assert adopting and all("crd" in c for c in adopting)
    steps = [c for c in commands if c not in adopting]
    if exists(cluster, "crd", CRD_NAME):
        steps = adopting + steps
    try:
        for argv in map(here, steps):
            run = cluster.helm if argv[0] == "helm" else cluster.kubectl
            run(*argv[1:], timeout=240)
        available(cluster, "gpu-rightsizer", namespace)
        crd = cluster.kubectl_json("get", "crd", CRD_NAME)
        assert crd["metadata"]["annotations"]["meta.helm.sh/release-namespace"] == namespace
    finally:
        cluster.helm("uninstall", "gpu-rightsizer", "-n", namespace, "--wait", check=False)


# --- RBAC on the API server ----------------------------------------------------------------------


def can(
    who: Cluster,
    verb: str,
    resource: str,
    namespace: str | None = None,
    subresource: str | None = None,
) -> bool:
    """``kubectl auth can-i`` as ``who``; ``namespace=None`` asks about every namespace."""
    where = ["-n", namespace] if namespace else ["--all-namespaces"]
    extra = [f"--subresource={subresource}"] if subresource else []
    proc = who.kubectl("auth", "can-i", verb, resource, *where, *extra, check=False)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), proc.stderr
    return answer == "yes"


def refused(who: Cluster, *args: str) -> str:
    """Run a kubectl command that the API server must refuse; return its error."""
    with pytest.raises(KubectlError) as caught:
        who.kubectl(*args)
    message = caught.value.stderr
    assert "Forbidden" in message or "forbidden" in message, message
    return message


def as_service_account(release: Release) -> Cluster:
    who = release.cluster.as_token(release.token())
    identity = json.loads(who.kubectl("auth", "whoami", "-o", "json").stdout)
    expected = f"system:serviceaccount:{release.namespace}:{release.account}"
    assert identity["status"]["userInfo"]["username"] == expected
    return who


STAGED_FLEET = """
seed: 23
workloads:
  - name: chat
    namespace: {first}
    modelName: meta-llama/Llama-3.1-8B-Instruct
    parameters: 8.03e9
    precision: bf16
    gpuModel: H100-80GB
    engine: vllm
    kvCacheBytesPerToken: 131072
    kvCacheUsageAtPeak: 0.3
    traffic: {{shape: diurnal, low: 0.05, high: 0.45}}
  - name: embed
    namespace: {second}
    container: embedder
    parameters: 3.35e8
    precision: fp16
    gpuModel: L4
    traffic: {{shape: bursty, low: 0.02, high: 0.8, burstsPerDay: 10}}
"""


@dataclasses.dataclass
class StagedFleet:
    staged: staging.Staged
    namespaces: tuple[str, ...]

    @property
    def prometheus_url(self) -> str:
        return self.staged.prometheus_url


@pytest.fixture(scope="module")
def staged_fleet(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StagedFleet]:
    """Two GPU workloads in two fresh namespaces, a day of history in a real Prometheus."""
    suffix = uuid.uuid4().hex[:6]
    first, second = f"helm-rbac-a-{suffix}", f"helm-rbac-b-{suffix}"
    fleet = fleets.parse(
        STAGED_FLEET.format(first=first, second=second), "test_helm_install.py:STAGED_FLEET"
    )
    kubectl = staging.Kubectl(cluster.kubectl_bin, cluster.kubeconfig)
    work = tmp_path_factory.mktemp("staged")
    staged = staging.stage(kubectl, fleet, work_dir=work, history_days=1.0)
    try:
        yield StagedFleet(staged, (first, second))
    finally:
        staged.stop()
        for ns in (first, second):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        nodes = [node["metadata"]["name"] for node in staging.nodes_for(fleet)]
        cluster.kubectl("delete", "node", *nodes, "--ignore-not-found", check=False)


def clear_statuses(cluster: Cluster, namespaces: Sequence[str]) -> None:
    """Remove what an earlier run wrote, so that Ready is earned again."""
    for ns in namespaces:
        for item in cluster.kubectl_json("get", "gpuworkloads", "-n", ns)["items"]:
            cluster.kubectl(
                "patch",
                "gpuworkload",
                item["metadata"]["name"],
                "-n",
                ns,
                "--subresource=status",
                "--type=merge",
                "-p",
                '{"status": null}',
            )


def ready(cluster: Cluster, namespace: str) -> dict[str, str]:
    """GPUWorkload name -> status of its Ready condition ("" when it has none)."""
    found = {}
    for item in cluster.kubectl_json("get", "gpuworkloads", "-n", namespace)["items"]:
        conditions = (item.get("status") or {}).get("conditions") or []
        status = next((c["status"] for c in conditions if c["type"] == "Ready"), "")
        found[item["metadata"]["name"]] = status
    return found


def operator_args(
    release: Release, who: Cluster, prometheus_url: str, workdir: pathlib.Path
) -> list[str]:
    """The installed Deployment's arguments, with the pod's files and ports made local."""
    (container,) = release.deployment()["spec"]["template"]["spec"]["containers"]
    configmap = release.cluster.kubectl_json(
        "get", "configmap", f"{release.account}-catalog", "-n", release.namespace
    )
    overrides = workdir / "overrides.yaml"
    overrides.write_text(configmap["data"]["overrides.yaml"], encoding="utf-8")
    local = {
        "--prometheus-url": prometheus_url,
        "--catalog-overrides": str(overrides),
        "--metrics-port": str(staging.free_port()),
        "--liveness": f"http://127.0.0.1:{staging.free_port()}/healthz",
        "--interval": "10s",
    }
    args = []
    for arg in container["args"]:
        flag, _, _ = arg.partition("=")
        args.append(f"{flag}={local[flag]}" if flag in local else arg)
    assert {arg.partition("=")[0] for arg in args} >= set(local)
    return [*args, f"--kubeconfig={who.kubeconfig}"]


@contextlib.contextmanager
def operator_running(args: list[str], log: pathlib.Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_RIGHTSIZER_")}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(OPERATOR), "run", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**env, "PYTHONUNBUFFERED": "1"},
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:  # not listening (yet), refused, timed out
        return 0, str(exc)


def our_events(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    """Events the operator posted about GPUWorkloads in ``namespace``."""
    items: list[dict[str, Any]] = cluster.kubectl_json(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.kind=GPUWorkload"
    )["items"]
    return [e for e in items if (e.get("source") or {}).get("component") == "gpu-rightsizer"]


def run_until_ready(
    args: list[str],
    log: pathlib.Path,
    cluster: Cluster,
    namespaces: Sequence[str],
    *,
    untouched: str | None = None,
    events_in: str | None = None,
) -> str:
    """Run the operator until every GPUWorkload in ``namespaces`` is Ready; return its log.

    While it still runs: its /healthz answers 200, its /metrics says every workload is ready,
    and (``events_in``) it posts an Event there: about a GPUWorkload whose target does not
    exist, added for that (a TargetNotFound Warning, whatever the recommendations are), then
    removed. Each is waited for, with a deadline: all of them are written asynchronously.
    """
    liveness = next(a.partition("=")[2] for a in args if a.startswith("--liveness="))
    metrics_port = next(a.partition("=")[2] for a in args if a.startswith("--metrics-port="))
    with operator_running(args, log) as proc:

        def all_ready() -> bool:
            assert proc.poll() is None, f"the operator exited:\n{log.read_text()}"
            return all(
                (found := ready(cluster, ns)) and set(found.values()) == {"True"}
                for ns in namespaces
            )

        eventually(all_ready, timeout=180, interval=2, what="every GPUWorkload to be Ready")
        eventually(lambda: get(liveness)[0] == 200, timeout=30, what=f"{liveness} to answer 200")

        def all_ready_in_metrics() -> bool:
            status, metrics = get(f"http://127.0.0.1:{metrics_port}/metrics")
            return status == 200 and all(
                re.search(
                    rf'^gpu_rightsizer_workload_ready\{{[^}}]*namespace="{ns}"[^}}]*\}} 1\.0$',
                    metrics,
                    re.MULTILINE,
                )
                for ns in namespaces
            )

        eventually(all_ready_in_metrics, timeout=60, what="/metrics to say every workload is ready")
        if events_in is not None:
            ghost = gpuworkload("ghost", events_in)
            ghost["spec"]["targetRef"]["name"] = "no-such-deployment"
            cluster.apply(ghost)
            try:
                eventually(
                    lambda: [
                        e
                        for e in our_events(cluster, events_in)
                        if e["involvedObject"]["name"] == "ghost" and e["type"] == "Warning"
                    ],
                    timeout=60,
                    what=f"a Warning Event from gpu-rightsizer in {events_in}",
                )
            finally:
                cluster.kubectl("delete", "gpuworkload", "ghost", "-n", events_in, "--wait")
        if untouched is not None:
            assert set(ready(cluster, untouched).values()) == {""}
    text = log.read_text(encoding="utf-8", errors="replace")
    return text


def permission_trouble(log: str) -> list[str]:
    return [
        line
        for line in log.splitlines()
        if PERMISSION_TROUBLE.search(line) and not NAMESPACE_TERMINATING.search(line)
    ]


def test_cluster_wide_rbac_is_enough_for_the_whole_job_and_refuses_the_rest(
    cluster: Cluster,
    release: Release,
    staged_fleet: StagedFleet,
    tmp_path: pathlib.Path,
) -> None:
    release.install({"crds": {"enabled": False}})
    who = as_service_account(release)
    workloads = staged_fleet.namespaces[0]

    # Granted: exactly the verbs the operator uses, everywhere.
    for verb in ("get", "list", "watch"):
        assert can(who, verb, "gpuworkloads.gpu-rightsizer.dev")
    assert can(who, "patch", "gpuworkloads.gpu-rightsizer.dev", subresource="status")
    for verb in ("create", "patch"):
        assert can(who, verb, "events", workloads)
    for resource in ("deployments.apps", "statefulsets.apps", "replicasets.apps", "pods"):
        assert can(who, "list", resource)
    assert can(who, "list", "nodes")
    for verb in ("list", "watch"):
        assert can(who, verb, "customresourcedefinitions.apiextensions.k8s.io")

    # Refused: anything else.
    for verb, resource in (
        ("get", "secrets"),
        ("list", "secrets"),
        ("get", "configmaps"),
        ("patch", "deployments.apps"),
        ("patch", "statefulsets.apps"),
        ("list", "poddisruptionbudgets.policy"),
        ("update", "deployments.apps"),
        ("delete", "pods"),
        ("create", "pods"),
        ("get", "pods"),
        ("create", "gpuworkloads.gpu-rightsizer.dev"),
        ("patch", "gpuworkloads.gpu-rightsizer.dev"),
        ("delete", "gpuworkloads.gpu-rightsizer.dev"),
        ("delete", "events"),
        ("get", "nodes"),
        ("patch", "nodes"),
        ("list", "namespaces"),
        ("create", "customresourcedefinitions.apiextensions.k8s.io"),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ):
        assert not can(who, verb, resource), f"{verb} {resource} is granted"
    refused(who, "get", "secrets", "-n", release.namespace)
    refused(
        who,
        "patch",
        "deployment",
        "chat",
        "-n",
        workloads,
        "--type=merge",
        "-p",
        '{"metadata": {"annotations": {"gpu-rightsizer.dev/test": "x"}}}',
    )

    # The operator, as this ServiceAccount and with the Deployment's arguments, does its job.
    clear_statuses(cluster, staged_fleet.namespaces)
    args = operator_args(release, who, staged_fleet.prometheus_url, tmp_path)
    log = run_until_ready(
        args, tmp_path / "operator.log", cluster, staged_fleet.namespaces, events_in=workloads
    )
    assert permission_trouble(log) == [], log

    # apply.enabled grants patching targets, and only that.
    release.upgrade({"crds": {"enabled": False}, "apply": {"enabled": True}})
    assert can(who, "patch", "deployments.apps", workloads)
    assert can(who, "patch", "statefulsets.apps", workloads)
    assert can(who, "list", "poddisruptionbudgets.policy", workloads)
    assert not can(who, "update", "deployments.apps", workloads)
    assert not can(who, "delete", "poddisruptionbudgets.policy", workloads)
    assert not can(who, "get", "secrets", workloads)


def test_namespaced_rbac_is_enough_in_the_watched_namespaces_and_nothing_elsewhere(
    cluster: Cluster,
    release: Release,
    staged_fleet: StagedFleet,
    tmp_path: pathlib.Path,
) -> None:
    watched = list(staged_fleet.namespaces)
    release.install(
        {"crds": {"enabled": False}, "rbac": {"clusterWide": False}, "watchNamespaces": watched}
    )
    who = as_service_account(release)
    elsewhere = release.namespace  # not watched

    for ns in watched:
        assert can(who, "list", "gpuworkloads.gpu-rightsizer.dev", ns)
        assert can(who, "watch", "gpuworkloads.gpu-rightsizer.dev", ns)
        assert can(who, "patch", "gpuworkloads.gpu-rightsizer.dev", ns, subresource="status")
        assert can(who, "list", "pods", ns)
        assert can(who, "create", "events", ns)
        assert not can(who, "get", "secrets", ns)
        assert not can(who, "patch", "deployments.apps", ns)
    for verb, resource in (
        ("list", "gpuworkloads.gpu-rightsizer.dev"),
        ("list", "pods"),
        ("list", "deployments.apps"),
        ("create", "events"),
    ):
        assert not can(who, verb, resource, elsewhere), f"{verb} {resource} in {elsewhere}"
        assert not can(who, verb, resource), f"{verb} {resource} in every namespace"
    assert can(who, "list", "nodes")
    assert can(who, "list", "namespaces")  # names only, for kopf
    assert not can(who, "get", "namespaces")
    refused(who, "get", "pods", "-n", elsewhere)

    # A GPUWorkload outside the watched namespaces is left alone.
    cluster.apply(gpuworkload("outside", elsewhere))
    clear_statuses(cluster, watched)
    args = operator_args(release, who, staged_fleet.prometheus_url, tmp_path)
    assert [a for a in args if a.startswith("--namespace=")] == [
        f"--namespace={ns}" for ns in watched
    ]
    log = run_until_ready(args, tmp_path / "operator.log", cluster, watched, untouched=elsewhere)
    assert permission_trouble(log) == [], log
