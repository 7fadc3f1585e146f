"""Command line of the fleet simulator.

    python -m gpu_rightsizer.fleetsim history --fleet FILE --days 7 --step 60s --out FILE.om
    python -m gpu_rightsizer.fleetsim serve --fleet FILE --port N
    python -m gpu_rightsizer.fleetsim manifests --fleet FILE [--out FILE.yaml]

Bad input (an unreadable or invalid fleet file, a model that does not fit its GPU, a busy port)
ends with a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import pathlib
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

import yaml

from gpu_rightsizer import catalogs
from gpu_rightsizer.fleetsim import deployments, exporter, fleets, openmetrics, series
from gpu_rightsizer.models import durations


def _duration_seconds(text: str) -> float:
    try:
        seconds = durations.parse(text).total_seconds()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be longer than zero")
    return seconds


def _end_time(text: str) -> float:
    if text == "now":
        return time.time()
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give 'now' or Unix seconds") from None


def _simulator(
    args: argparse.Namespace, now: float, start: float | None = None
) -> series.Simulator:
    fleet = fleets.load(args.fleet)
    if args.exported_labels:
        fleet = fleet.model_copy(update={"dcgm_labels": fleets.DcgmLabels.EXPORTED})
    epoch = series.default_epoch(now)
    if start is not None:
        epoch = min(epoch, start)
    return series.Simulator(fleet, catalogs.default_catalog(), epoch=epoch)


def _history(args: argparse.Namespace) -> int:
    end: float = args.end
    start = end - args.days * 86_400.0
    simulator = _simulator(args, end, start)
    stats = openmetrics.write_history(
        simulator, args.out, start=start, end=end, step_seconds=args.step
    )
    print(
        f"wrote {stats.path}: {stats.series} series, {stats.samples} samples, "
        f"{stats.bytes / 1e6:.1f} MB, {series.describe_epoch(stats.start)} .. "
        f"{series.describe_epoch(stats.end)} every {stats.step_seconds:g}s "
        f"in {stats.seconds:.1f}s"
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    simulator = _simulator(args, time.time())
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    endpoint = exporter.Exporter(simulator, host=args.host, port=args.port)
    try:
        endpoint.start()
    except OSError as exc:
        raise fleets.FleetError(f"cannot listen on {args.host}:{args.port}: {exc}") from None
    try:
        print(f"serving {len(simulator.placements)} workloads on {endpoint.url}", flush=True)
        stop.wait()
    finally:
        endpoint.stop()
    return 0


def _manifests(args: argparse.Namespace) -> int:
    simulator = _simulator(args, time.time())
    namespaces = sorted({p.workload.namespace for p in simulator.placements})
    documents = [deployments.namespace(n) for n in namespaces] + [
        deployments.deployment(p) for p in simulator.placements
    ]
    text = yaml.safe_dump_all(documents, sort_keys=False)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m gpu_rightsizer.fleetsim",
        description="Simulated DCGM and vLLM metrics (and Deployments) for a GPU fleet.",
    )
    commands = top.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--fleet", type=pathlib.Path, required=True, help="fleet YAML file")
        sub.add_argument(
            "--exported-labels",
            action="store_true",
            help="DCGM pod labels as exported_namespace/exported_pod/… (ServiceMonitor "
            "without honorLabels)",
        )

    history = commands.add_parser("history", help="write OpenMetrics history for promtool")
    common(history)
    history.add_argument("--days", type=float, default=7.0, help="length of history (7)")
    history.add_argument("--step", type=_duration_seconds, default=60.0, help="interval (60s)")
    history.add_argument(
        "--end", type=_end_time, default="now", help="last sample: 'now' or Unix seconds"
    )
    history.add_argument("--out", type=pathlib.Path, required=True, help="OpenMetrics file")
    history.set_defaults(run=_history)

    serve = commands.add_parser("serve", help="serve current samples on /metrics")
    common(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="0 picks a free port")
    serve.set_defaults(run=_serve)

    manifests = commands.add_parser("manifests", help="print the fleet's Deployments as YAML")
    common(manifests)
    manifests.add_argument("--out", type=pathlib.Path, default=None)
    manifests.set_defaults(run=_manifests)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        status: int = args.run(args)
    except (fleets.FleetError, catalogs.CatalogError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    sys.exit(main())
