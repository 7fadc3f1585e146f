#!/usr/bin/env bash
# The node agent against a real NVIDIA driver: what NVML reads, per GPU and MIG instance, and
# the process list while a small CUDA workload runs. Needs a machine with an NVIDIA GPU and its
# driver; the test suite never does (it uses the fake NVML). Prints everything to stdout, and to
# $OUT/device-check.txt when OUT is set.
#
#   bash hack/device-check.sh            # uses .venv when present, else builds one
#
# The CUDA workload comes from CuPy (cupy-cuda12x, or cupy-cuda13x with a CUDA 13 driver), or
# PyTorch when it is already installed; it is installed here only, never by the project.
set -uo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }
if [[ -n "${OUT:-}" ]]; then
  mkdir -p "$OUT"
  exec > >(tee "$OUT/device-check.txt") 2>&1
fi

log "machine"
date -u +%Y-%m-%dT%H:%M:%SZ
uname -srm
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=index,name,uuid,driver_version,memory.total,memory.used,mig.mode.current \
    --format=csv || true
else
  echo "nvidia-smi: not found (NVML may still be there)"
fi

PY=.venv/bin/python
if [[ ! -x "$PY" ]]; then
  log "virtualenv .cache/device-check-venv"
  python3 -m venv --system-site-packages .cache/device-check-venv
  PY=.cache/device-check-venv/bin/python
  "$PY" -m pip install --quiet -e . || { echo "cannot install gpu-rightsizer"; exit 1; }
fi
AGENT="$(dirname "$PY")/gpu-rightsizer"

log "one NVML reading through the agent's adapter"
"$PY" - <<'PYEOF'
import pynvml
from gpu_rightsizer.nvml import reader

r = reader.Reader(pynvml).read()
print("driver:", r.driver_version, "| error:", r.driver_error)
for d in r.devices:
    kind = f"MIG {d.mig_profile} (GI {d.gpu_instance_id}, CI {d.compute_instance_id}) of {d.parent_uuid}" if d.is_mig_instance else f"GPU {d.index}, MIG mode {d.mig_enabled}"
    print(f"- {d.uuid}: {d.name} | {kind}")
    print(f"  memory used/total/reserved: {d.memory_used_bytes}/{d.memory_total_bytes}/{d.memory_reserved_bytes} bytes")
    print(f"  utilization: {d.utilization_ratio} | memory utilization: {d.memory_utilization_ratio} | power: {d.power_watts} W | energy: {d.energy_joules} J")
    print(f"  processes: {d.processes}")
for e in r.errors:
    print(f"! {e.device} {e.field}: code {e.code} ({e.message})")
PYEOF

if command -v nvidia-smi >/dev/null && nvidia-smi -q | grep -q "Current *: Enabled"; then
  log "MIG instances (nvidia-smi)"
  nvidia-smi mig -lgi || true
  nvidia-smi mig -lci || true
fi

log "a small CUDA workload"
WORKLOAD=""
if "$PY" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  WORKLOAD='import torch, time; x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda"); y = torch.randn(4096, 4096, device="cuda"); t = time.time()
while time.time() - t < 40: y = y @ y.T; y /= y.norm(); torch.cuda.synchronize()'
else
  major=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9]*\).*/\1/p' | head -1)
  # Into a folder of its own, on PYTHONPATH for the workload only: never into the project's venv.
  "$PY" -m pip install --quiet --target .cache/device-check-cuda "cupy-cuda${major:-12}x" 2>&1 \
    | tail -2
  export PYTHONPATH=".cache/device-check-cuda${PYTHONPATH:+:$PYTHONPATH}"
  if "$PY" -c "import cupy; cupy.zeros(1).sum()" 2>/dev/null; then
    WORKLOAD='import cupy, time; x = cupy.empty(1 << 30, dtype=cupy.uint8); y = cupy.random.rand(4096, 4096, dtype=cupy.float32); t = time.time()
while time.time() - t < 40: y = y @ y.T; y /= cupy.linalg.norm(y); cupy.cuda.Device().synchronize()'
  fi
fi
if [[ -z "$WORKLOAD" ]]; then
  echo "no CUDA library (PyTorch or CuPy) could run here: the process list below is the idle one"
else
  "$PY" -c "$WORKLOAD" &
  WORKLOAD_PID=$!
  echo "workload pid $WORKLOAD_PID (1 GiB allocated, matrix products for 40 s)"
  sleep 12
fi

log "the agent itself (--no-pod-list: no cluster here), its /metrics and /healthz"
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$AGENT" agent --node-name "$(hostname)" --no-pod-list --interval 2s \
  --metrics-bind-address 127.0.0.1 --metrics-port "$PORT" --log-format console &
AGENT_PID=$!
sleep 6
curl -fsS "http://127.0.0.1:$PORT/healthz"; echo
curl -fsS "http://127.0.0.1:$PORT/metrics" | grep -v '^#' \
  | grep -E '^(DCGM_FI_DEV_(FB_USED|FB_FREE|FB_RESERVED|GPU_UTIL|POWER_USAGE|TOTAL_ENERGY_CONSUMPTION)|gpu_rightsizer_(host_|gpu_|agent_nvml_up|agent_field_errors|unresolved))'
kill "$AGENT_PID" 2>/dev/null; wait "$AGENT_PID" 2>/dev/null

if [[ -n "${WORKLOAD_PID:-}" ]]; then
  log "the workload's process as NVML lists it (pid $WORKLOAD_PID)"
  "$PY" - "$WORKLOAD_PID" <<'PYEOF'
import sys
import pynvml
from gpu_rightsizer.nvml import reader

pid = int(sys.argv[1])
for d in reader.Reader(pynvml).read().devices:
    for p in d.processes or ():
        mark = "  <- the workload" if p.pid == pid else ""
        print(f"{d.uuid}: pid {p.pid} {p.kind.value} memory {p.used_memory_bytes} sm {p.sm_utilization_ratio}{mark}")
PYEOF
  kill "$WORKLOAD_PID" 2>/dev/null; wait "$WORKLOAD_PID" 2>/dev/null
fi
log "done"
