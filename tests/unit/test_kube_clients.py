"""Building the API client: which configuration is used, token override, request timeouts."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import kubernetes.config
import pytest

from gpu_rightsizer import ports
from gpu_rightsizer.kube import clients, errors, reading, writing


def kubeconfig(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "from-kubeconfig"}}],
                "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "ctx",
            }
        )
    )
    return path


def test_kubeconfig_and_token_override(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, "http://127.0.0.1:1")
    plain = clients.api_client(path)
    assert plain.configuration.host == "http://127.0.0.1:1"
    assert plain.configuration.api_key == {"BearerToken": "Bearer from-kubeconfig"}
    assert plain.user_agent == clients.USER_AGENT
    as_sa = clients.api_client(path, token="sa-token")
    assert as_sa.configuration.host == "http://127.0.0.1:1"
    assert as_sa.configuration.api_key == {"BearerToken": "Bearer sa-token"}
    assert as_sa.configuration.refresh_api_key_hook is None


def test_in_cluster_config_when_running_in_a_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    # Not in a pod: no ServiceAccount token file, so the in-cluster loader says so.
    with pytest.raises(kubernetes.config.ConfigException, match="token file"):
        clients.api_client()


def test_kubeconfig_env_wins_over_in_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path, "http://127.0.0.1:2")))
    assert clients.api_client().configuration.host == "http://127.0.0.1:2"


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_a_silent_api_server_times_out(tmp_path: Path, silent_server: str) -> None:
    client = clients.api_client(kubeconfig(tmp_path, silent_server), timeout=(1.0, 0.3), retries=0)
    reader = reading.KubeClusterReader(client)
    started = time.monotonic()
    with pytest.raises(errors.ClusterReadError, match="listing deployments: cannot reach"):
        reader.snapshot()
    assert time.monotonic() - started < 5
    assert reader.last_call_count == 1


def test_adapters_satisfy_the_ports(tmp_path: Path) -> None:
    client = clients.api_client(kubeconfig(tmp_path, "http://127.0.0.1:1"))
    reader: ports.ClusterReader = reading.KubeClusterReader(client)
    writer: ports.StatusWriter = writing.KubeStatusWriter(client)
    recorder: ports.EventRecorder = writing.KubeEventRecorder(client, instance="x")
    assert callable(reader.targets)
    assert callable(writer.patch_status)
    assert callable(recorder.emit)
