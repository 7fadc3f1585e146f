"""Fixtures for the local control plane (hack/cluster).

`cluster` (session scope) brings up the real control plane with `hack/cluster up` — or reuses
one that is already up in the same state folder, or an existing cluster when
GPU_RIGHTSIZER_USE_EXISTING_CLUSTER=1 and KUBECONFIG are set — and stops it at the end of the
session only if it started it. `namespace` gives each test a fresh namespace and deletes it
afterwards. Tests that use them are marked `@pytest.mark.cluster`.

The binaries come from `make tools` (hack/build-tools.sh); a missing one is a test failure
that says so, never a skip: `make test` builds them first.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from hack import staging
from hack.devcluster.plane import (
    CLIENT_TOOLS,
    COMPONENTS,
    REPO_ROOT,
    LocalCluster,
    ToolsMissingError,
    find_tools,
)

HACK_CLUSTER = REPO_ROOT / "hack" / "cluster"
USE_EXISTING = "GPU_RIGHTSIZER_USE_EXISTING_CLUSTER"

T = TypeVar("T")


class KubectlError(AssertionError):
    """kubectl or helm exited non-zero; carries its output."""

    def __init__(self, args: list[str], proc: subprocess.CompletedProcess[str]) -> None:
        super().__init__(
            f"{' '.join(args)} exited {proc.returncode}\n"
            f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}"
        )
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr


def eventually(
    check: Callable[[], T | None],
    *,
    timeout: float = 60.0,
    interval: float = 0.5,
    what: str = "the condition",
) -> T:
    """Call `check` until it returns something truthy; fail the test with `what` after
    `timeout` s. An exception from `check` is not retried: it fails the test at once.

    The wait is hack/staging.py's `eventually`; only the way it gives up differs.
    """
    try:
        return staging.eventually(check, timeout=timeout, what=what, every=interval, retry=())
    except staging.WaitTimeoutError as exc:
        pytest.fail(str(exc))


@dataclass
class Cluster:
    """A running cluster and the clients to talk to it."""

    kubeconfig: Path
    kubectl_bin: Path
    helm_bin: Path
    local: LocalCluster | None = None  # None for an existing cluster
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cluster-")))

    def _run(
        self,
        argv: list[str],
        input: str | None,
        check: bool,
        timeout: float,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, **(env or {})},
        )
        if check and proc.returncode != 0:
            raise KubectlError(argv, proc)
        return proc

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; raise KubectlError on failure when `check`."""
        argv = [str(self.kubectl_bin), f"--kubeconfig={self.kubeconfig}", *args]
        return self._run(argv, input, check, timeout)

    def kubectl_json(self, *args: str, timeout: float = 120.0) -> Any:
        """kubectl ... -o json, decoded."""
        return json.loads(self.kubectl(*args, "-o", "json", timeout=timeout).stdout)

    def wait_established(self, crd_name: str, timeout: float = 60.0) -> None:
        """Wait for the CRD to be Established (``kubectl wait`` fails at once on a CRD whose
        status has no conditions yet, so the condition is polled)."""

        def established() -> bool:
            status = self.kubectl_json("get", "crd", crd_name).get("status") or {}
            return any(
                c.get("type") == "Established" and c.get("status") == "True"
                for c in status.get("conditions") or []
            )

        eventually(established, timeout=timeout, interval=0.2, what=f"CRD {crd_name} Established")

    def apply(self, *manifests: Mapping[str, Any] | str, namespace: str | None = None) -> str:
        """kubectl apply (server-side) of manifests given as dicts or YAML text."""
        docs = [m if isinstance(m, str) else yaml.safe_dump(dict(m)) for m in manifests]
        ns = [f"--namespace={namespace}"] if namespace else []
        return self.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            *ns,
            "-f",
            "-",
            input="\n---\n".join(docs),
        ).stdout

    def helm(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 300.0
    ) -> subprocess.CompletedProcess[str]:
        """Run helm against this cluster, with its caches kept away from the user's."""
        home = self.workdir / "helm"
        env = {
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        argv = [str(self.helm_bin), f"--kubeconfig={self.kubeconfig}", *args]
        return self._run(argv, input, check, timeout, env)

    def add_nodes(self, nodes: Iterable[Mapping[str, Any]]) -> None:
        """Create (or update) fake kwok nodes, e.g. from fleet.gpu_node(...).

        Node status (capacity, allocatable) is only taken from the manifest on create, so it is
        patched through the status subresource as well.
        """
        nodes = list(nodes)
        self.apply(*nodes)
        for node in nodes:
            status = {k: node["status"][k] for k in ("capacity", "allocatable")}
            self.kubectl(
                "patch",
                "node",
                node["metadata"]["name"],
                "--subresource=status",
                "--type=merge",
                "-p",
                json.dumps({"status": status}),
            )

    def as_token(self, token: str) -> Cluster:
        """The same cluster seen by whoever `token` belongs to (e.g. a ServiceAccount)."""
        config = yaml.safe_load(self.kubeconfig.read_text())
        context_name = config.get("current-context")
        context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        token_config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": cluster}],
            "users": [{"name": "token", "user": {"token": token}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "token"}}],
            "current-context": "c",
        }
        path = self.workdir / f"token-{uuid.uuid4().hex[:8]}.kubeconfig"
        path.write_text(json.dumps(token_config))
        path.chmod(0o600)
        return Cluster(path, self.kubectl_bin, self.helm_bin, None, self.workdir)


def _client_tools() -> dict[str, Path]:
    """kubectl and helm from .cache/bin; a clear failure when `make tools` has not run."""
    try:
        return find_tools(CLIENT_TOOLS)
    except ToolsMissingError as err:
        pytest.fail(str(err), pytrace=False)


def _hack_cluster(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, str(HACK_CLUSTER), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"hack/cluster {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout}\n{proc.stderr}",
            pytrace=False,
        )
    return proc


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Refuse to run a test that uses the cluster without the `cluster` marker."""
    fixtures = getattr(item, "fixturenames", ())
    if "cluster" in fixtures and item.get_closest_marker("cluster") is None:
        pytest.fail(f"{item.nodeid} uses the cluster: mark it @pytest.mark.cluster", pytrace=False)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The session's cluster (see the module docstring)."""
    if os.environ.get(USE_EXISTING) == "1":
        kubeconfig = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
        if not kubeconfig:
            pytest.fail(f"{USE_EXISTING}=1 needs KUBECONFIG to name a kubeconfig", pytrace=False)
        try:
            tools = find_tools(CLIENT_TOOLS)
        except ToolsMissingError:
            # Against an existing cluster, kubectl and helm from PATH will do.
            on_path = {name: shutil.which(name) for name in CLIENT_TOOLS}
            if all(on_path.values()):
                tools = {name: Path(str(path)) for name, path in on_path.items()}
            else:
                tools = _client_tools()  # fails, saying to run `make tools`
        existing = Cluster(Path(kubeconfig), tools["kubectl"], tools["helm"])
        try:
            yield existing
        finally:
            shutil.rmtree(existing.workdir, ignore_errors=True)
        return

    local = LocalCluster()
    tools = _client_tools()
    try:
        find_tools(COMPONENTS)
    except ToolsMissingError as err:
        pytest.fail(str(err), pytrace=False)
    started = not local.healthy()
    if started:
        _hack_cluster("up", timeout=400)
    handle = Cluster(local.kubeconfig, tools["kubectl"], tools["helm"], local)
    try:
        yield handle
    finally:
        shutil.rmtree(handle.workdir, ignore_errors=True)
        if started:
            _hack_cluster("down", timeout=120)


@pytest.fixture
def namespace(request: pytest.FixtureRequest, cluster: Cluster) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting for it to go)."""
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{stem or 'test'}-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    # Pods are refused until the namespace's default ServiceAccount exists.
    eventually(
        lambda: (
            cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode
            == 0
        ),
        timeout=30,
        what=f"the default ServiceAccount in {name}",
    )
    try:
        yield name
    finally:
        cluster.kubectl(
            "delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False
        )
