"""Start, check and stop the local control plane.

Every component runs as its own session leader (its pid is its session and process-group id),
with stdout and stderr in logs/<component>.log under the state folder. The state file records
the ports and, per component, the pid and the kernel's start time of that pid, so `down` stops
exactly the processes `up` started and never a later process that happens to reuse a pid.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from . import nodes as kwok_nodes
from .kubeapi import ApiError, KubeApi
from .pki import Pki, ensure_pki

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
CLIENT_TOOLS = ("kubectl", "helm")
CLUSTER_NAME = "gpu-rightsizer-local"
SERVICE_CIDR = "10.96.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
# Controllers that only do something with a cloud provider.
CLOUD_CONTROLLERS = (
    "service-lb-controller",
    "node-route-controller",
    "cloud-node-lifecycle-controller",
)


def cache_dir() -> Path:
    return Path(os.environ.get("GPU_RIGHTSIZER_CACHE") or REPO_ROOT / ".cache")


def default_bin_dir() -> Path:
    return Path(os.environ.get("GPU_RIGHTSIZER_BIN_DIR") or cache_dir() / "bin")


def default_state_dir() -> Path:
    return Path(os.environ.get("GPU_RIGHTSIZER_CLUSTER_DIR") or cache_dir() / "cluster")


class ClusterError(RuntimeError):
    """The cluster could not be brought up or down."""


class ToolsMissingError(ClusterError):
    """A binary that hack/build-tools.sh builds is not there."""


def find_tools(names: Iterable[str], bin_dir: Path | None = None) -> dict[str, Path]:
    """Absolute paths of the named binaries; ToolsMissingError naming all that are missing."""
    bin_dir = bin_dir or default_bin_dir()
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in names:
        path = bin_dir / name
        if path.is_file() and os.access(path, os.X_OK):
            found[name] = path.resolve()
        else:
            missing.append(name)
    if missing:
        raise ToolsMissingError(
            f"missing {', '.join(missing)} in {bin_dir}: build them with `make tools` "
            "(or `bash hack/build-tools.sh`)"
        )
    return found


# --- processes ---------------------------------------------------------------------------------


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from the state on (field 3), or None if there is no such pid."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _start_time(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return int(stat[19]) if stat else None


@dataclass(frozen=True)
class ProcessRecord:
    """A process `up` started: a session leader, identified by pid and start time."""

    pid: int
    start_time: int

    def alive(self) -> bool:
        stat = _proc_stat(self.pid)
        return stat is not None and stat[0] not in ("Z", "X") and int(stat[19]) == self.start_time

    def owns_session(self) -> bool:
        """Whether the session this process led may still have members.

        True while the pid is this process (running or a zombie) or is free; False once the
        pid belongs to a different process, which the kernel allows only after every member
        of the old session is gone.
        """
        return _start_time(self.pid) in (None, self.start_time)

    def session_members(self) -> list[int]:
        """Live processes in this process's session: the process and anything it started.

        A session id stays reserved while any process is in the session, so after the leader
        is gone these are still exactly the processes it left behind.
        """
        members = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            stat = _proc_stat(int(entry.name))
            if stat and int(stat[3]) == self.pid and stat[0] not in ("Z", "X"):
                members.append(int(entry.name))
        return members


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on the loopback interface (all held while choosing)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _http_ok(url: str, timeout: float = 3.0) -> bool:
    """True if GET url answers 200 (TLS certificates not checked: this is only a liveness probe)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    running: bool
    endpoint: str


# --- the cluster -------------------------------------------------------------------------------


class LocalCluster:
    """One local control plane, kept in one state folder."""

    def __init__(
        self,
        state_dir: Path | None = None,
        bin_dir: Path | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.state_dir = (state_dir or default_state_dir()).resolve()
        self.bin_dir = (bin_dir or default_bin_dir()).resolve()
        self._say = say or (lambda msg: print(f">> cluster: {msg}", flush=True))

    # paths
    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def etcd_data(self) -> Path:
        return self.state_dir / "etcd-data"

    @property
    def pki(self) -> Pki:
        return Pki(self.state_dir / "pki")

    def log_file(self, component: str) -> Path:
        return self.log_dir / f"{component}.log"

    # state
    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, state: Mapping[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        tmp.replace(self.state_file)

    def _records(self, state: Mapping[str, Any]) -> dict[str, ProcessRecord]:
        procs = state.get("processes", {})
        return {
            name: ProcessRecord(int(p["pid"]), int(p["start_time"]))
            for name, p in procs.items()
            if name in COMPONENTS
        }

    @property
    def ports(self) -> dict[str, int]:
        return {k: int(v) for k, v in self._load().get("ports", {}).items()}

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['kube-apiserver']}"

    def api(self) -> KubeApi:
        admin = self.pki.client("admin")
        return KubeApi(self.server, self.pki.ca_cert, admin.cert, admin.key)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One `up` or `down` at a time per state folder (e.g. two test sessions at once)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # status
    def _endpoints(self, ports: Mapping[str, int]) -> dict[str, str]:
        def url(scheme: str, key: str) -> str:
            return f"{scheme}://127.0.0.1:{ports[key]}" if key in ports else "-"

        return {
            "etcd": url("http", "etcd"),
            "kube-apiserver": url("https", "kube-apiserver"),
            "kube-controller-manager": url("https", "kube-controller-manager"),
            "kube-scheduler": url("https", "kube-scheduler"),
            "kwok": url("http", "kwok"),
        }

    def status(self) -> list[ComponentStatus]:
        state = self._load()
        records = self._records(state)
        endpoints = self._endpoints(self.ports)
        result = []
        for name in COMPONENTS:
            rec = records.get(name)
            result.append(
                ComponentStatus(
                    name, rec.pid if rec else None, bool(rec and rec.alive()), endpoints[name]
                )
            )
        return result

    def healthy(self) -> bool:
        """All components running and the API server ready."""
        if not all(s.running for s in self.status()):
            return False
        try:
            return str(self.api().get("/readyz")).strip() == "ok"
        except (ApiError, OSError, KeyError):
            return False

    # up
    def up(
        self,
        timeout: float = 300.0,
        nodes: list[dict[str, Any]] | None = None,
    ) -> bool:
        """Start the cluster and wait until it is ready; False if it was already up."""
        with self._locked():
            return self._up(timeout, nodes)

    def _up(self, timeout: float, nodes: list[dict[str, Any]] | None) -> bool:
        tools = find_tools(COMPONENTS, self.bin_dir)
        stages = tools["kwok"].parent / "kwok-stages.yaml"
        if not stages.is_file():
            raise ToolsMissingError(f"missing {stages}: run `make tools` (hack/build-tools.sh)")
        if self.healthy():
            self._say(f"already up and healthy (kubeconfig: {self.kubeconfig})")
            return False
        if any(s.running for s in self.status()):
            self._say("found a partly running cluster; stopping it first")
            self._down(keep_data=True, timeout=30.0)

        deadline = time.monotonic() + timeout
        for sub in ("logs", "pki", "etcd-data", "run"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        for private in ("pki", "etcd-data"):
            (self.state_dir / private).chmod(0o700)
        for name in COMPONENTS:  # keep the previous run's logs, one generation
            if self.log_file(name).exists():
                self.log_file(name).replace(self.log_file(name).with_suffix(".log.prev"))
        pki = ensure_pki(self.state_dir / "pki")
        names = (
            "etcd",
            "etcd-peer",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        )
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        state: dict[str, Any] = {"ports": ports, "processes": {}, "bin_dir": str(self.bin_dir)}
        self._save(state)
        server = f"https://127.0.0.1:{ports['kube-apiserver']}"
        self._write_kubeconfig(self.kubeconfig, server, pki, "admin")
        for who in ("kube-controller-manager", "kube-scheduler"):
            self._write_kubeconfig(self.state_dir / f"{who}.kubeconfig", server, pki, who)

        try:
            self._start(state, "etcd", tools, self._etcd_args(ports))
            self._wait(
                deadline,
                "etcd to report healthy",
                ["etcd"],
                lambda: _http_ok(f"http://127.0.0.1:{ports['etcd']}/health"),
            )
            self._start(state, "kube-apiserver", tools, self._apiserver_args(ports, pki))
            api = self.api()
            self._wait(
                deadline,
                "kube-apiserver /readyz",
                ["etcd", "kube-apiserver"],
                lambda: _api_text(api, "/readyz") == "ok",
            )
            self._start(state, "kube-controller-manager", tools, self._kcm_args(ports, pki))
            self._start(state, "kube-scheduler", tools, self._scheduler_args(ports))
            self._start(state, "kwok", tools, self._kwok_args(ports, stages))
            for name in ("kube-controller-manager", "kube-scheduler"):
                healthz = f"https://127.0.0.1:{ports[name]}/healthz"
                self._wait(deadline, f"{name} /healthz", [name], partial(_http_ok, healthz))
            self._wait(
                deadline,
                "kwok /healthz",
                ["kwok"],
                lambda: _http_ok(f"http://127.0.0.1:{ports['kwok']}/healthz"),
            )
            fleet_nodes = kwok_nodes.default_fleet() if nodes is None else nodes
            self.apply_nodes(fleet_nodes)
            self._wait(
                deadline,
                "the default ServiceAccount",
                list(COMPONENTS),
                lambda: api.exists("/api/v1/namespaces/default/serviceaccounts/default"),
            )
            names_ = [n["metadata"]["name"] for n in fleet_nodes]
            self._wait(
                deadline,
                f"{len(names_)} fake nodes to be Ready",
                list(COMPONENTS),
                lambda: _nodes_ready(api, names_),
            )
        except BaseException:
            self._say(f"bringing the cluster down again; logs are in {self.log_dir}")
            with contextlib.suppress(Exception):
                self._down(keep_data=True, timeout=30.0)
            raise
        self._say(f"up: {server} (kubeconfig: {self.kubeconfig})")
        return True

    # one component
    def stop_component(self, name: str, timeout: float = 30.0) -> None:
        """Stop one component (SIGTERM, then SIGKILL); the others and etcd's data stay."""
        with self._locked():
            state = self._load()
            rec = self._records(state).get(self._component(name))
            if rec is None or not rec.owns_session():
                return
            members = rec.session_members()
            if not members:
                return
            self._say(f"stopping {name} (pid {rec.pid})")
            _signal_all(members, signal.SIGTERM)
            if not _wait_gone(rec, timeout):
                _signal_all(rec.session_members(), signal.SIGKILL)
                if not _wait_gone(rec, 10.0):
                    raise ClusterError(f"could not stop {name} (pid {rec.pid})")

    def start_component(self, name: str, timeout: float = 120.0) -> None:
        """Start one stopped component again with the flags, ports, certificates and data of
        the running cluster, and wait until it is healthy (the API server: ``/readyz``)."""
        with self._locked():
            state = self._load()
            rec = self._records(state).get(self._component(name))
            if rec is not None and rec.alive():
                raise ClusterError(f"{name} is running (pid {rec.pid}): stop it first")
            ports = {k: int(v) for k, v in state.get("ports", {}).items()}
            if not ports:
                raise ClusterError("the cluster is not up: run `hack/cluster up`")
            tools = find_tools(COMPONENTS, self.bin_dir)
            pki = self.pki
            args = {
                "etcd": lambda: self._etcd_args(ports),
                "kube-apiserver": lambda: self._apiserver_args(ports, pki),
                "kube-controller-manager": lambda: self._kcm_args(ports, pki),
                "kube-scheduler": lambda: self._scheduler_args(ports),
                "kwok": lambda: self._kwok_args(ports, tools["kwok"].parent / "kwok-stages.yaml"),
            }[name]()
            self._start(state, name, tools, args)
            health: dict[str, Callable[[], bool]] = {
                "etcd": lambda: _http_ok(f"http://127.0.0.1:{ports['etcd']}/health"),
                "kube-apiserver": lambda: _api_text(self.api(), "/readyz") == "ok",
                "kube-controller-manager": partial(
                    _http_ok, f"https://127.0.0.1:{ports['kube-controller-manager']}/healthz"
                ),
                "kube-scheduler": partial(
                    _http_ok, f"https://127.0.0.1:{ports['kube-scheduler']}/healthz"
                ),
                "kwok": lambda: _http_ok(f"http://127.0.0.1:{ports['kwok']}/healthz"),
            }
            self._wait(time.monotonic() + timeout, f"{name} to be healthy", [name], health[name])
            self._say(f"{name} is back")

    def restart_component(self, name: str, timeout: float = 120.0) -> None:
        """Stop one component and start it again (same flags, ports, certificates, data)."""
        self.stop_component(name)
        self.start_component(name, timeout=timeout)

    @staticmethod
    def _component(name: str) -> str:
        if name not in COMPONENTS:
            known = ", ".join(COMPONENTS)
            raise ClusterError(f"unknown component {name!r}: expected one of {known}")
        return name

    def apply_nodes(self, nodes: Iterable[dict[str, Any]]) -> None:
        """Create or update kwok nodes (see devcluster.nodes)."""
        api = self.api()
        count = 0
        for node in nodes:
            api.apply_node(node)
            count += 1
        self._say(f"applied {count} fake nodes")

    def _start(
        self, state: dict[str, Any], name: str, tools: Mapping[str, Path], args: list[str]
    ) -> None:
        self._say(f"starting {name}")
        log = self.log_file(name)
        with log.open("ab") as out:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            out.write(f"==== {stamp} {tools[name]} {' '.join(args)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                [str(tools[name]), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir / "run",
                start_new_session=True,
                close_fds=True,
            )
        start_time = _start_time(proc.pid)
        if start_time is None:
            raise ClusterError(f"{name} exited at once; see {log}")
        state["processes"][name] = {"pid": proc.pid, "start_time": start_time}
        self._save(state)

    def _wait(
        self, deadline: float, what: str, watch: list[str], check: Callable[[], bool]
    ) -> None:
        state = self._load()
        records = self._records(state)
        while True:
            for name in watch:
                rec = records.get(name)
                if rec is not None and not rec.alive():
                    raise ClusterError(
                        f"{name} exited while waiting for {what}; last lines of "
                        f"{self.log_file(name)}:\n{_tail(self.log_file(name))}"
                    )
            try:
                if check():
                    return
            except (ApiError, OSError):
                pass
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out waiting for {what}; logs are in {self.log_dir}")
            time.sleep(0.5)

    # component flags
    def _etcd_args(self, ports: Mapping[str, int]) -> list[str]:
        client = f"http://127.0.0.1:{ports['etcd']}"
        peer = f"http://127.0.0.1:{ports['etcd-peer']}"
        return [
            "--name=default",
            f"--data-dir={self.etcd_data}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--unsafe-no-fsync=true",
            "--quota-backend-bytes=4294967296",
            "--log-level=warn",
        ]

    def _apiserver_args(self, ports: Mapping[str, int], pki: Pki) -> list[str]:
        return [
            f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports['kube-apiserver']}",
            f"--cert-dir={self.state_dir / 'run' / 'kube-apiserver'}",
            f"--tls-cert-file={pki.serving.cert}",
            f"--tls-private-key-file={pki.serving.key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            # Aggregated API servers (and the components' delegated authentication) trust
            # requests the API server proxies with this client certificate.
            f"--requestheader-client-ca-file={pki.ca_cert}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.client('front-proxy-client').cert}",
            f"--proxy-client-key-file={pki.client('front-proxy-client').key}",
            # On top of the default set (NamespaceLifecycle, ServiceAccount, ResourceQuota,
            # PodSecurity, the admission webhooks and policies, ...).
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            # The `kubernetes` Service would point at 127.0.0.1, which endpoints reject.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
        ]

    def _kcm_args(self, ports: Mapping[str, int], pki: Pki) -> list[str]:
        kubeconfig = self.state_dir / "kube-controller-manager.kubeconfig"
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-controller-manager']}",
            f"--cert-dir={self.state_dir / 'run' / 'kube-controller-manager'}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_cert}",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.ca_key}",
            "--controllers=*," + ",".join(f"-{c}" for c in CLOUD_CONTROLLERS),
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--profiling=false",
            # The default client rate (20/s, burst 30) paces ReplicaSet and pod creation: the
            # 20,000 writes of 10,000 one-replica Deployments would take 17 minutes at 20/s.
            "--kube-api-qps=300",
            "--kube-api-burst=600",
            "--concurrent-deployment-syncs=20",
            "--concurrent-replicaset-syncs=20",
        ]

    def _scheduler_args(self, ports: Mapping[str, int]) -> list[str]:
        kubeconfig = self.state_dir / "kube-scheduler.kubeconfig"
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-scheduler']}",
            f"--cert-dir={self.state_dir / 'run' / 'kube-scheduler'}",
            "--leader-elect=false",
            "--profiling=false",
            "--kube-api-qps=300",  # the default 50/s paces binding thousands of pods
            "--kube-api-burst=600",
        ]

    def _kwok_args(self, ports: Mapping[str, int], stages: Path) -> list[str]:
        return [
            # Only our Stages, never ~/.kwok/kwok.yaml.
            f"--config={stages}",
            f"--kubeconfig={self.kubeconfig}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={kwok_nodes.KWOK_ANNOTATION}=fake",
            "--manage-nodes-with-label-selector=",
            # Pod IPs and the node IP kwok writes into status; nothing listens there.
            "--cidr=10.0.0.1/24",
            "--node-ip=10.0.0.1",
            f"--node-port={ports['kwok']}",
            f"--server-address=127.0.0.1:{ports['kwok']}",
            "--node-lease-duration-seconds=40",
        ]

    def _write_kubeconfig(self, path: Path, server: str, pki: Pki, user: str) -> None:
        client = pki.client(user)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": CLUSTER_NAME,
                    "cluster": {
                        "server": server,
                        "certificate-authority-data": _b64(pki.ca_cert),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": _b64(client.cert),
                        "client-key-data": _b64(client.key),
                    },
                }
            ],
            "contexts": [
                {"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": user}}
            ],
            "current-context": CLUSTER_NAME,
        }
        path.write_text(json.dumps(config, indent=2) + "\n")
        path.chmod(0o600)

    # down
    def down(self, keep_data: bool = False, timeout: float = 30.0) -> list[int]:
        """Stop every process `up` started (SIGTERM, then SIGKILL); return the pids stopped."""
        with self._locked():
            return self._down(keep_data, timeout)

    def _down(self, keep_data: bool, timeout: float) -> list[int]:
        state = self._load()
        records = self._records(state)
        stopped: list[int] = []
        # Reverse start order: clients first, etcd last.
        for name in reversed(COMPONENTS):
            rec = records.get(name)
            if rec is None:
                continue
            members = rec.session_members() if rec.owns_session() else []
            if not members:
                continue
            self._say(f"stopping {name} (pid {rec.pid})")
            _signal_all(members, signal.SIGTERM)
            if not _wait_gone(rec, timeout):
                self._say(f"{name} did not stop on SIGTERM; killing it")
                _signal_all(rec.session_members(), signal.SIGKILL)
                if not _wait_gone(rec, 10.0):
                    raise ClusterError(f"could not stop {name} (pid {rec.pid})")
            stopped.extend(members)
        if state:
            state["processes"] = {}
            self._save(state)
        if not keep_data and self.etcd_data.exists():
            shutil.rmtree(self.etcd_data)
        return stopped


def _signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(rec: ProcessRecord, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not rec.session_members():
            return True
        time.sleep(0.1)
    return not rec.session_members()


def _api_text(api: KubeApi, path: str) -> str:
    return str(api.get(path)).strip()


def _nodes_ready(api: KubeApi, names: list[str]) -> bool:
    """Every named node reports Ready and no longer carries the not-ready taint."""
    items = {n["metadata"]["name"]: n for n in api.get("/api/v1/nodes").get("items", [])}
    for name in names:
        node = items.get(name)
        if node is None:
            return False
        conditions = node.get("status", {}).get("conditions", [])
        if not any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            return False
        taints = node.get("spec", {}).get("taints", [])
        if any(t["key"].startswith("node.kubernetes.io/") for t in taints):
            return False
    return True


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
