"""Metric dialects: the names real clusters give DCGM's series and the labels naming their pods.

The queries (:mod:`.queries`) are written in dcgm-exporter's current names
(``DCGM_FI_DEV_FB_USED``, labels ``UUID``, ``namespace``/``pod``/``container``). A
:class:`Dialect` says what a cluster's Prometheus holds instead; the sweep renders the same
queries (as many, in the same order) with the dialect's metric and label names, and every
answer is labelled ``namespace``/``pod`` whatever the dialect.

``dcgm`` (the default)
    dcgm-exporter 2.x and later. A GPU's pod is in ``namespace``/``pod``/``container``, or, behind
    a ServiceMonitor without ``honorLabels``, in ``exported_namespace``/``exported_pod``/
    ``exported_container`` (``namespace``/``pod`` then name the exporter's own pod). Both layouts
    are read in one query.

``dcgm-old-namespace``
    dcgm-exporter run with ``--use-old-namespace`` (``-o``): the metric names of DCGM 1.x's
    exporter (lower case, ``dcgm_fb_used``, ``dcgm_fi_prof_gr_engine_active``,
    ``dcgm_gpu_utilization``, ...), the GPU's UUID in ``uuid`` rather than ``UUID``, and the pod in
    ``pod_namespace``/``pod_name``/``container_name``. Those never collide with the labels a
    scrape adds, so ``namespace``/``pod`` on a DCGM series always name the exporter's pod and are
    never read. Sources: the names are go-dcgm's legacy field table
    (``pkg/dcgm/legacy_fields.csv`` of github.com/NVIDIA/go-dcgm, which maps each old name to the
    same field id as the new one: 252 framebuffer used, 1001 graphics engine active, 203 GPU
    utilisation, 1004 tensor pipe active, 1005 DRAM active, 155 power usage); the labels are
    dcgm-exporter's ``oldPodAttribute``/``oldNamespaceAttribute``/``oldContainerAttribute``
    (``pod_name``, ``pod_namespace``, ``container_name``) and its ``uuid`` label under
    ``UseOldNamespace`` (github.com/NVIDIA/dcgm-exporter, ``pkg/dcgmexporter``). The other GPU
    labels (``gpu``, ``device``, ``modelName``, ``GPU_I_PROFILE``, ``GPU_I_ID``) are unchanged.

``gmp``
    Google Cloud Managed Service for Prometheus with managed collection. Its PodMonitoring has no
    ``honorLabels``: every scraped series gets the target labels ``project_id``, ``location``,
    ``cluster``, ``namespace``, ``job``, ``instance`` and, by default, ``pod``, ``container``,
    ``top_level_controller_name``, ``top_level_controller_type``; dcgm-exporter's own
    ``namespace``/``pod``/``container`` therefore always arrive as ``exported_namespace``/
    ``exported_pod``/``exported_container``, while vLLM (which sets no pod labels) is found by
    the target labels. The dialect reads DCGM's pods only from ``exported_*`` and vLLM's only from
    ``namespace``/``pod``, so a DCGM series without a pod (a GPU nobody uses) is never taken for
    the exporter pod's own. Source: the ``TargetLabels`` and ``MetricRelabeling`` documentation of
    ``PodMonitoringSpec`` in github.com/GoogleCloudPlatform/prometheus-engine
    (``pkg/operator/apis/monitoring/v1/pod_types.go``). A project's global view holds every
    cluster's series: give the cluster as a matcher (``cluster=NAME``) so two clusters' pods of
    the same name are not merged.

The node agent's own series (``gpu_rightsizer_process_memory_used_bytes``) are read in both of
the default layouts under every dialect: the agent is this project's, not dcgm-exporter's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

NAMESPACE = "namespace"
POD = "pod"
CONTAINER = "container"
EXPORTED_NAMESPACE = "exported_namespace"
EXPORTED_POD = "exported_pod"
EXPORTED_CONTAINER = "exported_container"


@dataclasses.dataclass(frozen=True)
class Layout:
    """Which labels of a series name the pod it belongs to, and the matchers that pick the
    series labelled that way (inside braces)."""

    namespace: str
    pod: str
    container: str
    present: str

    @property
    def renamed(self) -> bool:
        """Whether the answer's labels must be copied to ``namespace``/``pod``."""
        return (self.namespace, self.pod) != (NAMESPACE, POD)


EXPORTED = Layout(EXPORTED_NAMESPACE, EXPORTED_POD, EXPORTED_CONTAINER, f'{EXPORTED_POD}!=""')
"""Behind a ServiceMonitor without ``honorLabels`` (or GMP): the exporter's labels renamed."""
DIRECT = Layout(NAMESPACE, POD, CONTAINER, f'{EXPORTED_POD}="",{POD}!=""')
"""The pod's labels as the exporter wrote them (``honorLabels``, or a plain scrape)."""
OLD_NAMESPACE = Layout("pod_namespace", "pod_name", "container_name", 'pod_name!=""')
"""dcgm-exporter's ``--use-old-namespace`` labels."""

BOTH = (EXPORTED, DIRECT)


@dataclasses.dataclass(frozen=True)
class Dialect:
    """Where DCGM and vLLM series keep their pods, and DCGM's names in this dialect."""

    name: str
    dcgm_layouts: tuple[Layout, ...]
    vllm_layouts: tuple[Layout, ...]
    metric_names: tuple[tuple[str, str], ...] = ()
    """dcgm-exporter's current metric name -> this dialect's, for those that differ."""
    uuid_label: str = "UUID"
    description: str = ""

    def metric(self, name: str) -> str:
        """The dialect's name for the metric the queries call ``name``."""
        return dict(self.metric_names).get(name, name)


DCGM = Dialect(
    "dcgm",
    dcgm_layouts=BOTH,
    vllm_layouts=BOTH,
    description="dcgm-exporter's DCGM_FI_* names; pods in namespace/pod or exported_*",
)
DCGM_OLD_NAMESPACE = Dialect(
    "dcgm-old-namespace",
    dcgm_layouts=(OLD_NAMESPACE,),
    vllm_layouts=BOTH,
    # github.com/NVIDIA/go-dcgm pkg/dcgm/legacy_fields.csv (old name, field id).
    metric_names=(
        ("DCGM_FI_DEV_FB_USED", "dcgm_fb_used"),  # 252
        ("DCGM_FI_DEV_FB_FREE", "dcgm_fb_free"),  # 251
        ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "dcgm_fi_prof_gr_engine_active"),  # 1001
        ("DCGM_FI_DEV_GPU_UTIL", "dcgm_gpu_utilization"),  # 203
        ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "dcgm_fi_prof_pipe_tensor_active"),  # 1004
        ("DCGM_FI_PROF_DRAM_ACTIVE", "dcgm_fi_prof_dram_active"),  # 1005
        ("DCGM_FI_DEV_POWER_USAGE", "dcgm_power_usage"),  # 155
        ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "dcgm_total_energy_consumption"),  # 156
    ),
    uuid_label="uuid",
    description="dcgm-exporter --use-old-namespace: dcgm_* names, uuid, pod_namespace/pod_name",
)
GMP = Dialect(
    "gmp",
    dcgm_layouts=(EXPORTED,),
    vllm_layouts=(DIRECT,),
    description="Google Managed Prometheus: DCGM's pods in exported_*, vLLM's in namespace/pod",
)

DIALECTS: Mapping[str, Dialect] = {d.name: d for d in (DCGM, DCGM_OLD_NAMESPACE, GMP)}
NAMES = tuple(DIALECTS)


def by_name(name: str) -> Dialect:
    """The dialect called ``name``; ValueError naming the known ones otherwise."""
    try:
        return DIALECTS[name]
    except KeyError:
        known = ", ".join(NAMES)
        raise ValueError(f"unknown metrics dialect {name!r} (known: {known})") from None
