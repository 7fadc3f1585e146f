"""The simulator's history rewritten the way other exporters and collectors store it.

:func:`rewrite` takes a history in the simulator's direct layout (dcgm-exporter's current
names, the pod in ``namespace``/``pod``/``container``, scraped with ``honorLabels``) and returns
the same samples as a cluster in another :mod:`~gpu_rightsizer.metrics.dialects` dialect holds
them:

``dcgm-old-namespace``
    dcgm-exporter ``--use-old-namespace`` scraped by a ServiceMonitor: DCGM metric names from
    go-dcgm's legacy table (``dcgm_fb_used``, ...), ``UUID`` -> ``uuid``, the pod in
    ``pod_namespace``/``pod_name``/``container_name``, and the scrape's target labels
    ``namespace``/``pod``/``container``/``job``/``instance`` naming the exporter's own pod (no
    collision, so nothing is renamed ``exported_*``). vLLM's series are unchanged.

``gmp``
    Google Managed Prometheus' managed collection (PodMonitoring, no ``honorLabels``): every
    series gets ``project_id``, ``location``, ``cluster``; on DCGM series the exporter's
    ``namespace``/``pod``/``container`` become ``exported_*`` and the target labels name the
    exporter's pod (plus ``top_level_controller_*``). vLLM sets no pod labels, so its target
    labels stay ``namespace``/``pod``. A GPU nobody uses (no pod labels from the exporter) is
    added as :data:`IDLE_GPU_UUID`: under GMP its series carry only the exporter's pod.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gpu_rightsizer.fleetsim import series
from gpu_rightsizer.metrics import dialects

DCGM_NAMES = frozenset(f.name for f in series.DCGM_FAMILIES)
EXPORTER_POD = f"{series.EXPORTER_NAME}-x7k2p"
GMP_TARGET = (("project_id", "gpu-fleet-1234"), ("location", "europe-west4"), ("cluster", "eu-1"))
IDLE_GPU_UUID = "GPU-00000000-1d1e-4000-8000-000000000000"

_OLD_LABELS = {
    "UUID": "uuid",
    "namespace": "pod_namespace",
    "pod": "pod_name",
    "container": "container_name",
}
_GMP_LABELS = {
    "namespace": "exported_namespace",
    "pod": "exported_pod",
    "container": "exported_container",
}
_SCRAPE_LABELS = frozenset({"job", "instance"})


def _exporter_target(instance: str) -> series.Labels:
    return (
        ("namespace", series.EXPORTER_NAMESPACE),
        ("pod", EXPORTER_POD),
        ("container", series.EXPORTER_NAME),
        ("job", series.EXPORTER_NAME),
        ("instance", instance),
    )


def _relabel(member: series.Series, names: dict[str, str], extra: series.Labels) -> series.Series:
    labels = member.label_dict
    instance = labels.get("instance", "")
    kept = tuple((names.get(k, k), v) for k, v in member.labels if k not in _SCRAPE_LABELS)
    return dataclasses.replace(member, labels=(*kept, *_exporter_target(instance), *extra))


def rewrite(
    history: dict[str, list[series.Series]], dialect: dialects.Dialect
) -> dict[str, list[series.Series]]:
    """``history`` (direct layout) as a Prometheus holds it in ``dialect``."""
    out: dict[str, list[series.Series]] = {}
    for name, members in history.items():
        if name not in DCGM_NAMES:
            extra = GMP_TARGET if dialect is dialects.GMP else ()
            out[name] = [dataclasses.replace(m, labels=(*m.labels, *extra)) for m in members]
            continue
        family = dataclasses.replace(members[0].family, name=dialect.metric(name))
        if family.kind == "counter":
            # An OpenMetrics counter's samples end in _total, DCGM's energy counter does not
            # (the simulator's writer types it "unknown" for the same reason).
            family = dataclasses.replace(family, kind="gauge")
        if dialect is dialects.DCGM_OLD_NAMESPACE:
            rewritten = [_relabel(m, _OLD_LABELS, ()) for m in members]
        elif dialect is dialects.GMP:
            controller = (
                ("top_level_controller_name", series.EXPORTER_NAME),
                ("top_level_controller_type", "DaemonSet"),
            )
            rewritten = [_relabel(m, _GMP_LABELS, (*controller, *GMP_TARGET)) for m in members]
            idle = members[0]
            gpu = tuple(
                (k, IDLE_GPU_UUID if k == "UUID" else v)
                for k, v in idle.labels
                if k not in ("namespace", "pod", "container", *_SCRAPE_LABELS)
            )
            target = _exporter_target(idle.label_dict.get("instance", ""))
            rewritten.append(
                series.Series(
                    family, (*gpu, *target, *controller, *GMP_TARGET), np.copy(idle.values)
                )
            )
        else:
            rewritten = list(members)
        out[family.name] = [dataclasses.replace(m, family=family) for m in rewritten]
    return out
