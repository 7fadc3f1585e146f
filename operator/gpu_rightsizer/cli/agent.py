"""``gpu-rightsizer agent``: the node agent (NVML readings per GPU, MIG instance and pod)."""

from __future__ import annotations

import pathlib
import signal
import sys
import threading
from typing import Any

import click

from gpu_rightsizer.models import durations


@click.command()
@click.option(
    "--node-name",
    envvar="NODE_NAME",
    required=True,
    help="This node's name (the DaemonSet passes spec.nodeName); env NODE_NAME.",
)
@click.option(
    "--kubeconfig",
    type=click.Path(path_type=pathlib.Path, dir_okay=False),
    default=None,
    help="Kubeconfig for the pod list (default: the pod's ServiceAccount, else ~/.kube/config).",
)
@click.option("--interval", default="10s", show_default=True, help="Time between readings.")
@click.option("--metrics-port", type=int, default=9400, show_default=True)
@click.option(
    "--metrics-bind-address",
    default="0.0.0.0",
    show_default=True,
    help="Address /metrics and /healthz listen on ('::' for IPv6).",
)
@click.option(
    "--proc-root",
    type=click.Path(path_type=pathlib.Path, file_okay=False),
    default=pathlib.Path("/proc"),
    show_default=True,
    help="The host's /proc (hostPID: true makes it /proc; else mount the host's read-only).",
)
@click.option(
    "--pod-list/--no-pod-list",
    default=True,
    show_default=True,
    help="Resolve pod UIDs through the API server's list of this node's pods; without it, "
    "processes in pods are counted as unresolved (a node outside Kubernetes, a device check).",
)
@click.option(
    "--fake-nvml",
    type=click.Path(path_type=pathlib.Path, dir_okay=False, exists=True),
    default=None,
    hidden=True,
    help="Simulation: read the GPUs described in this YAML file instead of the driver.",
)
@click.option(
    "--log-format", type=click.Choice(["json", "console"]), default="json", show_default=True
)
@click.option("--log-level", default="INFO", show_default=True)
def agent(
    node_name: str,
    kubeconfig: pathlib.Path | None,
    interval: str,
    metrics_port: int,
    metrics_bind_address: str,
    proc_root: pathlib.Path,
    pod_list: bool,
    fake_nvml: pathlib.Path | None,
    log_format: str,
    log_level: str,
) -> None:
    """Run the node agent: serve NVML readings, attributed to pods, on /metrics."""
    # The agent's libraries are imported only when it runs.
    from gpu_rightsizer.agent import pods, running, serving  # noqa: PLC0415
    from gpu_rightsizer.kube import clients  # noqa: PLC0415
    from gpu_rightsizer.nvml import reader  # noqa: PLC0415
    from gpu_rightsizer.telemetry import logs  # noqa: PLC0415

    try:
        interval_seconds = durations.parse(interval).total_seconds()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--interval") from None
    if interval_seconds <= 0:
        raise click.BadParameter("must be positive", param_hint="--interval")
    nvml: Any
    if fake_nvml is not None:
        nvml = _fake_nvml(fake_nvml)
    else:
        import pynvml  # noqa: PLC0415

        nvml = pynvml
    directory = None
    if pod_list:
        try:
            api = clients.api_client(kubeconfig)
        except Exception as exc:  # kubernetes.config.ConfigException and file errors
            click.echo(
                f"error: no Kubernetes configuration for the pod list ({exc}); "
                "pass --kubeconfig, run in a pod, or --no-pod-list",
                err=True,
            )
            sys.exit(1)
        directory = pods.PodDirectory(api, node_name)
    logs.configure(log_level, log_format)
    log = logs.get_logger("gpu_rightsizer.agent")
    node_agent = running.Agent(
        reader.Reader(nvml),
        directory,
        node=node_name,
        proc_root=proc_root,
        interval_seconds=interval_seconds,
    )
    try:
        server = serving.start(
            metrics_bind_address, metrics_port, node_agent.metrics, node_agent.health
        )
    except OSError as exc:
        click.echo(
            f"error: cannot listen on {metrics_bind_address}:{metrics_port}: {exc}", err=True
        )
        sys.exit(1)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info(
        "agent started",
        node=node_name,
        port=server.port,
        interval_seconds=interval_seconds,
        nvml="fake" if fake_nvml else "driver",
    )
    try:
        node_agent.run(stop)
    finally:
        server.shutdown()
        log.info("agent stopped")


def _fake_nvml(path: pathlib.Path) -> Any:
    """The simulator's fake NVML reading ``path``; a usage error where it is not installed."""
    try:
        from gpu_rightsizer.fleetsim import nvml as fake  # noqa: PLC0415 (simulation only)
    except ModuleNotFoundError as exc:
        if exc.name not in ("gpu_rightsizer.fleetsim", "gpu_rightsizer.fleetsim.nvml"):
            raise
        raise click.UsageError(
            "--fake-nvml needs the fleet simulator (gpu_rightsizer.fleetsim), which is not "
            "installed: it ships with the source tree, not the wheel or the image; run from a "
            "checkout (pip install -e .)"
        ) from None
    return fake.FakeNvml.from_file(path)
