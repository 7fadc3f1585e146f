#!/usr/bin/env python3
"""A local Prometheus for the tests, the demo and the benchmarks (standard library only).

    hack/prometheus.py up [--target HOST:PORT ...] [--scrape-interval 15s] [--port N]
    hack/prometheus.py targets HOST:PORT ...      # change what it scrapes, no restart
    hack/prometheus.py backfill FILE.om           # promtool blocks into its data folder
    hack/prometheus.py status
    hack/prometheus.py down

Everything lives in one state folder (default ``.cache/prometheus/``; ``--state-dir`` to move
it): ``prometheus.yml``, the file_sd list ``targets.json``, the TSDB under ``data/``, the log
``prometheus.log`` and ``state.json`` (pid, port, URL, arguments). ``up`` takes a free loopback
port unless told one; ``down`` stops exactly the process ``up`` started (pid and command line
checked) and nothing else.

Scrapes use ``honor_labels: true``: the fleet simulator's series carry their own ``job`` and
``instance`` labels, the same ones the backfilled history has, so past and present join up.

Backfill: ``promtool tsdb create-blocks-from openmetrics`` writes blocks into a scratch folder
(``--max-block-duration``, 24h by default, so a week of history is a handful of blocks and
promtool reads the file a handful of times rather than once per 2 hours), then they are moved
into ``data/``. A running Prometheus is restarted on the same port so it loads them at once
(it would otherwise pick them up on its next block reload, within a minute). Prometheus >= 2.39
accepts blocks overlapping each other and the head; older versions need
``--storage.tsdb.allow-overlapping-blocks``, which ``up`` then adds.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hack.devcluster import plane  # noqa: E402  (standard library only, like this script)

DEFAULT_STATE_DIR = ROOT / ".cache" / "prometheus"
JOB = "fleetsim"


def say(message: str) -> None:
    print(f">> prometheus: {message}", flush=True)


class HarnessError(RuntimeError):
    """Something the user has to fix; printed as one line."""


# --- state ------------------------------------------------------------------------------------


class Paths:
    def __init__(self, state_dir: pathlib.Path) -> None:
        self.root = state_dir.resolve()
        self.config = self.root / "prometheus.yml"
        self.targets = self.root / "targets.json"
        self.data = self.root / "data"
        self.log = self.root / "prometheus.log"
        self.state = self.root / "state.json"
        self.scratch = self.root / "backfill"


def read_state(paths: Paths) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(paths.state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state


def is_ours(pid: int, paths: Paths) -> bool:
    """Is ``pid`` alive and the Prometheus started with our config file?"""
    try:
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True  # no /proc (not Linux): trust the recorded pid
    return f"--config.file={paths.config}".encode() in cmdline


def running(paths: Paths) -> dict[str, Any] | None:
    state = read_state(paths)
    if state and is_ours(int(state["pid"]), paths):
        return state
    return None


def write_atomic(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", delete=False, encoding="utf-8"
    ) as handle:
        handle.write(text)
    os.replace(handle.name, path)


# --- tools ------------------------------------------------------------------------------------


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise HarnessError(
            f"{name} not found on PATH: run `make tools` (hack/install-prometheus.sh)"
        )
    return found


def version() -> tuple[int, int]:
    out = subprocess.run(
        [binary("prometheus"), "--version"], capture_output=True, text=True, check=False
    )
    match = re.search(r"version (\d+)\.(\d+)", out.stdout + out.stderr)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: use a number and a unit (s, m, h, d)")
    unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
    return float(match[1]) * unit


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), ""
    except (urllib.error.URLError, OSError):
        return 0, ""


# --- commands ---------------------------------------------------------------------------------


def write_config(paths: Paths, scrape_interval: str) -> None:
    config = f"""# Written by hack/prometheus.py; rewritten on every `up`.
global:
  scrape_interval: {scrape_interval}
  scrape_timeout: {scrape_interval if seconds(scrape_interval) < 10 else "10s"}
  evaluation_interval: {scrape_interval}
scrape_configs:
  - job_name: {JOB}
    honor_labels: true
    file_sd_configs:
      - files: [{json.dumps(str(paths.targets))}]
        refresh_interval: 5s
"""
    write_atomic(paths.config, config)


def set_targets(paths: Paths, targets: list[str]) -> None:
    for target in targets:
        if not re.fullmatch(r"[^\s/:]+:\d+", target):
            raise HarnessError(f"target {target!r}: give HOST:PORT")
    groups = [{"targets": targets, "labels": {}}] if targets else []
    write_atomic(paths.targets, json.dumps(groups, indent=2) + "\n")


def up(
    paths: Paths,
    *,
    port: int | None,
    targets: list[str] | None,
    scrape_interval: str,
    retention: str,
    timeout: float,
) -> dict[str, Any]:
    state = running(paths)
    if state is not None:
        say(f"already running: {state['url']} (pid {state['pid']})")
        if targets is not None:
            set_targets(paths, targets)
        return state
    prometheus = binary("prometheus")
    paths.data.mkdir(parents=True, exist_ok=True)
    write_config(paths, scrape_interval)
    if targets is not None or not paths.targets.exists():
        set_targets(paths, targets or [])
    port = port or plane.free_ports(1)[0]
    command = [
        prometheus,
        f"--config.file={paths.config}",
        f"--storage.tsdb.path={paths.data}",
        f"--storage.tsdb.retention.time={retention}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        "--web.enable-admin-api",
        "--log.level=info",
    ]
    if version() < (2, 39):
        command.append("--storage.tsdb.allow-overlapping-blocks")
    say(f"starting on 127.0.0.1:{port} (data {paths.data}, log {paths.log})")
    with paths.log.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=paths.root,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    state = {
        "pid": process.pid,
        "port": port,
        "url": url,
        "started": time.time(),
        "scrape_interval": scrape_interval,
        "retention": retention,
        "command": command,
    }
    write_atomic(paths.state, json.dumps(state, indent=2) + "\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            paths.state.unlink(missing_ok=True)
            tail = paths.log.read_text(encoding="utf-8", errors="replace").splitlines()[-5:]
            raise HarnessError(f"prometheus exited with {process.returncode}: " + " | ".join(tail))
        if http_get(f"{url}/-/ready")[0] == 200:
            say(f"ready: {url} (pid {process.pid})")
            return state
        time.sleep(0.2)
    stop_pid(process.pid, paths)
    paths.state.unlink(missing_ok=True)
    raise HarnessError(f"prometheus not ready after {timeout:.0f}s; see {paths.log}")


def stop_pid(pid: int, paths: Paths, timeout: float = 20.0) -> None:
    if not is_ours(pid, paths):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
            if finished == pid:
                return
        except ChildProcessError:
            pass  # not our child (started by an earlier `up`): poll /proc instead
        if not is_ours(pid, paths):
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def down(paths: Paths) -> None:
    state = read_state(paths)
    if state is None:
        say("not running")
        return
    pid = int(state["pid"])
    if is_ours(pid, paths):
        say(f"stopping pid {pid}")
        stop_pid(pid, paths)
    else:
        say(f"pid {pid} is gone (or is not ours); clearing the state")
    paths.state.unlink(missing_ok=True)


def status(paths: Paths) -> int:
    state = running(paths)
    blocks = sorted(p.name for p in paths.data.glob("*/meta.json")) if paths.data.exists() else []
    if state is None:
        say(f"not running (state {paths.root}, {len(blocks)} blocks on disk)")
        return 3
    ready = http_get(f"{state['url']}/-/ready")[0] == 200
    targets = paths.targets.read_text(encoding="utf-8") if paths.targets.exists() else "[]"
    target_list = [t for g in json.loads(targets) for t in g.get("targets", [])]
    say(
        f"{'ready' if ready else 'starting'}: {state['url']} (pid {state['pid']}), "
        f"{len(list(paths.data.glob('*/meta.json')))} blocks, scraping {target_list or 'nothing'}"
    )
    return 0


def backfill(paths: Paths, source: pathlib.Path, max_block_duration: str, restart: bool) -> None:
    promtool = binary("promtool")
    if not source.is_file():
        raise HarnessError(f"{source}: no such file")
    shutil.rmtree(paths.scratch, ignore_errors=True)
    paths.scratch.mkdir(parents=True)
    paths.data.mkdir(parents=True, exist_ok=True)
    base = [promtool, "tsdb", "create-blocks-from", "openmetrics"]
    scratch = paths.scratch
    say(f"promtool: blocks from {source} ({source.stat().st_size / 1e6:.1f} MB)")
    began = time.monotonic()
    result = subprocess.run(
        [*base, f"--max-block-duration={max_block_duration}", "-q", str(source), str(scratch)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 and "max-block-duration" in result.stderr:
        # promtool older than 2.28 has no such flag: two-hour blocks then.
        result = subprocess.run(
            [*base, str(source), str(paths.scratch)], capture_output=True, text=True, check=False
        )
    if result.returncode != 0:
        problem = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise HarnessError(f"promtool failed on {source}: {problem[0]}")
    blocks = [p for p in paths.scratch.iterdir() if (p / "meta.json").exists()]
    for block in blocks:
        os.replace(block, paths.data / block.name)
    shutil.rmtree(paths.scratch, ignore_errors=True)
    say(f"moved {len(blocks)} blocks into {paths.data} in {time.monotonic() - began:.1f}s")
    state = running(paths)
    if state is not None and restart:
        say("restarting Prometheus so it loads them now")
        down(paths)
        up(
            paths,
            port=int(state["port"]),
            targets=None,
            scrape_interval=str(state["scrape_interval"]),
            retention=str(state["retention"]),
            timeout=120.0,
        )


def main(argv: list[str] | None = None) -> int:
    top = argparse.ArgumentParser(description="A local Prometheus for gpu-rightsizer.")
    top.add_argument(
        "--state-dir",
        type=pathlib.Path,
        default=DEFAULT_STATE_DIR,
        help=f"config, data, log and pid live here (default {DEFAULT_STATE_DIR})",
    )
    commands = top.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start Prometheus (no-op when it runs)")
    start.add_argument("--port", type=int, default=None, help="default: a free port")
    start.add_argument(
        "--target", action="append", default=None, help="HOST:PORT to scrape (repeatable)"
    )
    start.add_argument("--scrape-interval", default="15s")
    start.add_argument("--retention", default="30d")
    start.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for ready")
    commands.add_parser("down", help="stop the Prometheus `up` started")
    commands.add_parser("status", help="exit 0 when running, 3 when not")
    fill = commands.add_parser("backfill", help="load an OpenMetrics history file")
    fill.add_argument("file", type=pathlib.Path)
    fill.add_argument("--max-block-duration", default="24h")
    fill.add_argument("--no-restart", action="store_true", help="do not restart a running one")
    targets = commands.add_parser("targets", help="replace the scrape targets (no restart)")
    targets.add_argument("target", nargs="*", help="HOST:PORT")
    args = top.parse_args(argv)
    paths = Paths(args.state_dir)
    try:
        if args.command == "up":
            seconds(args.scrape_interval)
            state = up(
                paths,
                port=args.port,
                targets=args.target,
                scrape_interval=args.scrape_interval,
                retention=args.retention,
                timeout=args.timeout,
            )
            print(state["url"])
        elif args.command == "down":
            down(paths)
        elif args.command == "status":
            return status(paths)
        elif args.command == "backfill":
            backfill(paths, args.file, args.max_block_duration, restart=not args.no_restart)
        elif args.command == "targets":
            set_targets(paths, args.target)
            say(f"scraping {args.target or 'nothing'}")
    except (HarnessError, argparse.ArgumentTypeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
