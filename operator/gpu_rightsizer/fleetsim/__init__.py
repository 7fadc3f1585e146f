"""The fleet simulator: realistic DCGM and vLLM metrics for a GPU fleet that does not exist.

Tests, the demo and the benchmarks need a Prometheus full of the series a real cluster's
dcgm-exporter and vLLM servers would produce. This package makes them from a fleet description
(:mod:`.fleets`, a YAML file of workloads: model, precision, GPU model, MIG profile, replicas,
traffic shape), deterministically for a seed:

- :mod:`.signals` turns time into load: stateless, hash-based noise, so any instant can be
  computed on its own and the history and the live endpoint agree sample for sample;
- :mod:`.layouts` places the replicas on GPUs and nodes and names the pods the way the
  ReplicaSet controller would;
- :mod:`.series` computes every metric (names, labels and units exactly as dcgm-exporter and
  vLLM publish them) for arrays of timestamps;
- :mod:`.openmetrics` streams history to an OpenMetrics file for
  ``promtool tsdb create-blocks-from openmetrics``;
- :mod:`.exporter` serves the present on a ``/metrics`` endpoint for Prometheus to scrape;
- :mod:`.deployments` writes the Deployment manifests whose pods the series describe;
- :mod:`.nvml` is a fake NVML with pynvml's functions, shapes and error codes, read from a
  YAML file, for the node agent on a node that has no GPU (tests and the simulated fleet).

Numbers are physically plausible, not measured: memory stays within the GPU or MIG slice, power
between the GPU's idle and TDP following activity, energy counters only grow and integrate the
power. GPU facts come from :func:`gpu_rightsizer.catalogs.default_catalog`.

This is a test and demo tool, run from the source tree: the wheel and the image leave it out
(pyproject.toml), and ``gpu-rightsizer agent --fake-nvml`` says so there. It must never be
imported by the operator itself (the pure core
and the adapters know nothing of it; ``.importlinter`` enforces that), never talk to a
Kubernetes cluster, and never pretend to be a source of real measurements.
"""
