#!/usr/bin/env bash
# Install the real Prometheus server and promtool (Debian's `prometheus` package) for the tests,
# the demo and the benchmarks. Idempotent: when both binaries are already on PATH it only prints
# their version.
#
# Debian's package ships a system service (prometheus.service listening on :9090). We never want
# it running: our own instance (hack/prometheus.py) starts on a free loopback port with its own
# data folder. So service starts are blocked during the install (policy-rc.d) and the service is
# stopped and disabled afterwards where systemd runs.
#
# Needs: promtool with `tsdb create-blocks-from openmetrics` (Prometheus >= 2.24; bookworm ships
# 2.42, which also accepts overlapping blocks by default).
set -euo pipefail

say() { printf '>> install-prometheus: %s\n' "$*"; }

have_tools() { command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; }

check_features() {
    if ! promtool tsdb create-blocks-from openmetrics --help >/dev/null 2>&1; then
        say "ERROR: this promtool lacks 'tsdb create-blocks-from openmetrics' (needs Prometheus >= 2.24)"
        exit 1
    fi
}

stop_system_service() {
    # Only where systemd is really PID 1; in containers there is no service manager to ask.
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        if systemctl is-active --quiet prometheus.service 2>/dev/null \
            || systemctl is-enabled --quiet prometheus.service 2>/dev/null; then
            say "stopping and disabling Debian's prometheus.service (we run our own instance)"
            $SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
        fi
    fi
}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
fi

if have_tools; then
    check_features
    stop_system_service
    say "present: $(prometheus --version 2>&1 | head -n1)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    say "ERROR: prometheus/promtool are missing and there is no apt-get here;"
    say "install Prometheus >= 2.24 (server and promtool) on PATH and run this again"
    exit 1
fi
if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
    say "ERROR: prometheus/promtool are missing; installing them needs root (or sudo)"
    exit 1
fi

# Keep the package's maintainer scripts from starting the service during the install.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 0755 "$policy"
    created_policy=1
fi
cleanup() { if [ "$created_policy" = 1 ]; then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT

say "apt-get update"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
say "apt-get install prometheus (no recommends)"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    prometheus >/dev/null

if ! have_tools; then
    say "ERROR: the prometheus package installed, but prometheus/promtool are not on PATH"
    exit 1
fi
check_features
stop_system_service
say "installed: $(prometheus --version 2>&1 | head -n1)"
