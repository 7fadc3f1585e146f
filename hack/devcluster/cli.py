"""hack/cluster: the local control plane's command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import nodes as kwok_nodes
from .kubeapi import ApiError
from .pki import PkiError
from .plane import COMPONENTS, ClusterError, LocalCluster, default_state_dir


def _state_dir_option(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=default,
        help="folder for this cluster's state, certificates, data and logs "
        f"(default: $GPU_RIGHTSIZER_CLUSTER_DIR or {default_state_dir()})",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hack/cluster",
        description="A local Kubernetes control plane (etcd, kube-apiserver, "
        "kube-controller-manager, kube-scheduler) with a simulated GPU fleet on kwok nodes.",
    )
    _state_dir_option(parser, None)
    # Also accepted after the subcommand; SUPPRESS keeps a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    _state_dir_option(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", parents=[common], help="start the cluster and wait until ready")
    up.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (default 300)")
    up.add_argument("--no-fleet", action="store_true", help="create no fake GPU nodes")
    down = sub.add_parser("down", parents=[common], help="stop every process `up` started")
    down.add_argument("--keep-data", action="store_true", help="keep etcd's data for the next `up`")
    for name, what in (
        ("restart", "stop one component and start it again (same flags, ports, certs, data)"),
        ("stop", "stop one component; the others and etcd's data stay"),
        ("start", "start one stopped component again and wait until it is healthy"),
    ):
        sub.add_parser(name, parents=[common], help=what).add_argument(
            "component", choices=COMPONENTS
        )
    sub.add_parser("status", parents=[common], help="show each component and whether it runs")
    sub.add_parser("kubeconfig", parents=[common], help="print the kubeconfig's path")
    sub.add_parser("fleet", parents=[common], help="print the default fake GPU nodes as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cluster = LocalCluster(args.state_dir)
    try:
        if args.command == "up":
            cluster.up(timeout=args.timeout, nodes=[] if args.no_fleet else None)
            print(f"export KUBECONFIG={cluster.kubeconfig}")
        elif args.command == "down":
            stopped = cluster.down(keep_data=args.keep_data)
            print(f">> cluster: down ({len(stopped)} processes stopped)")
        elif args.command == "restart":
            cluster.restart_component(args.component)
        elif args.command == "stop":
            cluster.stop_component(args.component)
        elif args.command == "start":
            cluster.start_component(args.component)
        elif args.command == "status":
            return _status(cluster)
        elif args.command == "kubeconfig":
            print(cluster.kubeconfig)
        elif args.command == "fleet":
            print(json.dumps(kwok_nodes.node_list(kwok_nodes.default_fleet()), indent=2))
    except (ClusterError, PkiError, ApiError) as err:
        print(f"hack/cluster {args.command}: {err}", file=sys.stderr)
        return 1
    return 0


def _status(cluster: LocalCluster) -> int:
    statuses = cluster.status()
    for s in statuses:
        state = "running" if s.running else "stopped"
        pid = f"pid {s.pid}" if s.running and s.pid else "-"
        print(f"{s.name:<24} {state:<8} {pid:<11} {s.endpoint}")
    running = sum(s.running for s in statuses)
    if running == len(statuses):
        ready = "ready" if cluster.healthy() else "NOT ready"
        print(f"cluster: up, API server {ready}; kubeconfig {cluster.kubeconfig}")
        return 0 if ready == "ready" else 1
    print("cluster: down" if running == 0 else f"cluster: partly up ({running}/{len(statuses)})")
    return 3
