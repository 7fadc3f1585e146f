"""``gpu-rightsizer report``: the fleet audit, from the statuses the operator writes.

For each cluster (the kubeconfig's current context, or each ``--context``) it lists the
GPUWorkloads with their statuses, their targets and pods, and the GPU nodes. With
``--prometheus-url`` the statuses are computed instead, by the decision ``recommend`` and the
operator run, from the same queries (a central Prometheus holding several clusters' series is
read one cluster at a time through ``--cluster-label``). The pure core
(:mod:`gpu_rightsizer.audit`) builds the report; :mod:`gpu_rightsizer.audit.render` writes it.
"""

from __future__ import annotations

import dataclasses
import datetime
import pathlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import click
import kubernetes.config
import pydantic

from gpu_rightsizer import catalogs, config, decision, ports
from gpu_rightsizer.audit import fleet, packing, render, report as report_, whatif
from gpu_rightsizer.cli import loading
from gpu_rightsizer.kube import clients, errors, objects, reading
from gpu_rightsizer.manifests import nodes as node_inventory
from gpu_rightsizer.metrics import prometheus
from gpu_rightsizer.models import crd, durations, gpus, inventory, workloads

_FILE = click.Path(path_type=pathlib.Path, dir_okay=False)


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@dataclasses.dataclass(frozen=True)
class ClusterData:
    name: str
    objects: tuple[decision.WorkloadObject, ...]
    labels: Mapping[workloads.WorkloadRef, Mapping[str, str]]
    statuses: Mapping[workloads.WorkloadRef, crd.GPUWorkloadStatus]
    states: Mapping[workloads.WorkloadRef, ports.TargetState]
    stock: inventory.Inventory


def _context_name(kubeconfig: pathlib.Path | None, context: str | None) -> str:
    if context:
        return context
    try:
        loader: Any = kubernetes.config.list_kube_config_contexts
        _, active = loader(config_file=str(kubeconfig) if kubeconfig else None)
        return str(active.get("name") or "default")
    except Exception:  # in a pod, or no kubeconfig: one cluster, unnamed
        return "default"


def _workload_objects(
    items: Sequence[Mapping[str, Any]],
) -> tuple[list[decision.WorkloadObject], dict[workloads.WorkloadRef, Mapping[str, str]]]:
    out = []
    labels: dict[workloads.WorkloadRef, Mapping[str, str]] = {}
    for item in items:
        meta = item.get("metadata") or {}
        ref = workloads.WorkloadRef(
            namespace=str(meta.get("namespace", "")), name=str(meta.get("name", ""))
        )
        status = item.get("status")
        generation = meta.get("generation")
        out.append(
            decision.WorkloadObject(
                ref=ref,
                spec=item.get("spec") or {},
                status=status if isinstance(status, Mapping) else None,
                generation=generation if isinstance(generation, int) else None,
                uid=str(meta["uid"]) if meta.get("uid") else None,
                annotations=dict(meta.get("annotations") or {}),
            )
        )
        labels[ref] = dict(meta.get("labels") or {})
    return out, labels


def _read_cluster(
    name: str,
    api: Any,
    namespaces: Sequence[str],
    catalog: gpus.Catalog,
    *,
    prometheus_settings: prometheus.PrometheusSettings | None,
    window: str,
    now: datetime.datetime,
) -> ClusterData:
    try:
        items = objects.list_gpuworkloads(api, namespaces)
        snapshot = reading.KubeClusterReader(api).snapshot()
    except errors.ClusterReadError as exc:
        _fail(f"cluster {name}: {exc}")
    found, labels = _workload_objects(items)
    specs = {o.ref: decision.validate(o) for o in found}
    refs = [
        (o.ref, spec.target_ref.kind, spec.target_ref.name, spec.target_ref.container)
        for o in found
        if isinstance(spec := specs[o.ref], crd.GPUWorkloadSpec)
    ]
    states = reading.resolve(snapshot, refs)
    stock = node_inventory.build(
        snapshot.nodes, snapshot.pods, catalog, source=f"the GPU nodes of {name}"
    )
    statuses: dict[workloads.WorkloadRef, crd.GPUWorkloadStatus] = {}
    if prometheus_settings is None:
        for o in found:
            try:
                statuses[o.ref] = crd.GPUWorkloadStatus.model_validate(o.status or {})
            except pydantic.ValidationError as exc:
                where = f"{name}: gpuworkload {o.ref.namespace}/{o.ref.name}"
                _fail(f"{where}: status: {loading.first_error(exc)}")
    else:
        targets = [s.pods for s in states.values() if s.pods is not None]
        source = prometheus.PrometheusUsageSource(prometheus_settings)
        usage = source.collect(targets, window=window, at=now)
        if usage.error is not None:
            _fail(f"cluster {name}: {usage.error}")
        rounded = ports.UsageReport(
            profiles={ref: p.rounded() for ref, p in usage.profiles.items()},
            queries=usage.queries,
        )
        quiet = [
            dataclasses.replace(o, spec={**o.spec, "mode": crd.Mode.RECOMMEND.value}) for o in found
        ]
        decided = decision.decide(
            quiet,
            {o.ref: decision.validate(o) for o in quiet},
            states,
            rounded,
            catalog=catalog,
            table=catalogs.default_precisions(),
            now=now,
            settings=decision.Settings(window=window),
            stock=stock,
        )
        statuses = {r.ref: crd.GPUWorkloadStatus.model_validate(r.document) for r in decided}
    return ClusterData(name, tuple(found), labels, statuses, states, stock)


# --- consolidation -----------------------------------------------------------------------------


def _audited_requests(data: ClusterData) -> dict[str, dict[str, int]]:
    pods = [p for s in data.states.values() for p in s.pod_objects]
    return node_inventory.gpu_requests(pods)


def _pinned_gpus(node: inventory.NodeGPUs, audited: Mapping[str, int]) -> int:
    """GPUs of ``node`` held by pods the audit does not move (conservatively: a MIG slice
    held by such a pod pins a whole GPU)."""
    whole = max(node.whole_allocatable - node.whole_free - audited.get(_GPU, 0), 0)
    slices = 0
    for profile, allocatable in node.mig_allocatable.items():
        used = allocatable - node.mig_free.get(profile, 0)
        slices += max(used - audited.get(f"{_MIG}{profile}", 0), 0)
    return min(whole + slices, node.gpu_count)


_GPU = "nvidia.com/gpu"
_MIG = "nvidia.com/mig-"


def _consolidation(
    clusters: Sequence[ClusterData],
    catalog: gpus.Catalog,
    prices: Mapping[str, float],
    default_price: float | None,
) -> report_.Consolidation:
    table = catalogs.mig_placements()
    models: list[report_.ModelConsolidation] = []
    unplaced: list[str] = []
    algorithm = ""
    multi = len(clusters) > 1
    for data in clusters:
        audited = _audited_requests(data)
        nodes = [
            packing.Node(
                name=n.name,
                gpu_model=n.gpu_model,
                gpus=n.gpu_count,
                mig_capable=n.mig_capable,
                pinned_gpus=_pinned_gpus(n, audited.get(n.name, {})),
            )
            for n in data.stock.nodes
            if n.gpu_model is not None and n.schedulable
        ]
        demands = []
        for o in data.objects:
            status = data.statuses.get(o.ref)
            if status is None:
                continue
            target = status.recommendation or status.current
            if target is None:
                continue
            for i in range(target.replicas):
                demands.append(
                    packing.Demand(
                        key=f"{o.ref.namespace}/{o.ref.name}#{i}",
                        gpu_model=target.gpu_model,
                        gpus=target.gpus_per_replica,
                        mig_profile=target.mig_profile,
                    )
                )
        packed = packing.pack(demands, nodes, catalog, table)
        algorithm = packed.algorithm
        for model in sorted({n.gpu_model for n in nodes}):
            price = prices.get(model, default_price)
            of_model = [n for n in nodes if n.gpu_model == model]
            total = sum(n.gpus for n in of_model)
            used = packed.gpus_used_by_model.get(model, 0)
            models.append(
                report_.ModelConsolidation(
                    gpu_model=f"{data.name}/{model}" if multi else model,
                    nodes=len(of_model),
                    gpus_total=total,
                    gpus_needed=used,
                    gpus_freed=total - used,
                    nodes_freed=packed.nodes_freed_by_model.get(model, 0),
                    lower_bound_gpus=packed.lower_bound_gpus.get(model, 0),
                    purchase_price_per_gpu=price,
                )
            )
        prefix = f"{data.name}/" if multi else ""
        unplaced += [f"{prefix}{u.demand.key}: {u.reason}" for u in packed.unplaced]
    note = (
        "Recommended allocations (current ones where there is no recommendation) packed onto "
        "the nodes; GPUs held by pods outside the audit stay where they are, and MIG GPUs may "
        "be repartitioned."
    )
    return report_.Consolidation(algorithm, tuple(models), tuple(unplaced), note)


# --- the command -------------------------------------------------------------------------------


def _prices(values: Sequence[str]) -> tuple[dict[str, float], float | None]:
    per_model: dict[str, float] = {}
    default: float | None = None
    for value in values:
        model, sep, amount = value.rpartition("=")
        try:
            price = float(amount)
        except ValueError:
            _fail(f"--purchase-price {value!r}: give PRICE or MODEL=PRICE (a number)")
        if price < 0:
            _fail(f"--purchase-price {value!r}: must not be negative")
        if sep:
            per_model[model] = price
        else:
            default = price
    return per_model, default


@click.command()
@click.option("--kubeconfig", type=_FILE, default=None, help="Kubeconfig (default: as kubectl).")
@click.option(
    "--context",
    "contexts",
    multiple=True,
    help="Kubeconfig context to report on (repeatable: one report over several clusters). "
    "NAME=VALUE also names the cluster's --cluster-label value in a central Prometheus.",
)
@click.option(
    "-n", "--namespace", "namespaces", multiple=True, help="Only these namespaces (repeatable)."
)
@click.option(
    "-o", "--output", type=click.Choice(render.FORMATS), default="table", show_default=True
)
@click.option(
    "--output-file",
    type=_FILE,
    default=None,
    help="Write the report to this file instead of standard output (-o html: one file).",
)
@click.option(
    "--group-by",
    default="namespace",
    show_default=True,
    help="namespace, or label:KEY to group by a GPUWorkload label (e.g. label:team).",
)
@click.option("--idle-days", type=float, default=7.0, show_default=True)
@click.option(
    "--idle-activity",
    type=float,
    default=0.05,
    show_default=True,
    help="Engine activity (p99, 0-1) at or below which an allocation counts as idle.",
)
@click.option(
    "--gpu-models",
    default="",
    help="What-if: comma-separated GPU models (catalog ids) to evaluate the fleet on.",
)
@click.option(
    "--purchase-price",
    "purchase_prices",
    multiple=True,
    help="Purchase price of one GPU (PRICE, or MODEL=PRICE; repeatable): the CapEx that GPUs "
    "freed by consolidation save.",
)
@click.option("--prometheus-url", default=None, help="Compute from Prometheus, as recommend.")
@click.option("--prometheus-token-file", type=_FILE, default=None)
@click.option("--prometheus-ca-file", type=_FILE, default=None)
@click.option("--insecure-skip-tls-verify", is_flag=True, default=False)
@click.option(
    "--cluster-label",
    default="cluster",
    show_default=True,
    help="The label that names the cluster in a central Prometheus (with several --context).",
)
@click.option("--window", default="7d", show_default=True, help="Look-back with Prometheus.")
@click.option("--catalog-overrides", type=_FILE, default=None)
def report(
    kubeconfig: pathlib.Path | None,
    contexts: tuple[str, ...],
    namespaces: tuple[str, ...],
    output: str,
    output_file: pathlib.Path | None,
    group_by: str,
    idle_days: float,
    idle_activity: float,
    gpu_models: str,
    purchase_prices: tuple[str, ...],
    prometheus_url: str | None,
    prometheus_token_file: pathlib.Path | None,
    prometheus_ca_file: pathlib.Path | None,
    insecure_skip_tls_verify: bool,
    cluster_label: str,
    window: str,
    catalog_overrides: pathlib.Path | None,
) -> None:
    """The fleet audit: cost, savings, idle GPUs, consolidation, sharing and what-if."""
    if group_by != "namespace" and not (group_by.startswith("label:") and len(group_by) > 6):
        _fail(f"--group-by {group_by!r}: use namespace or label:KEY")
    if idle_days < 0 or not 0 <= idle_activity <= 1:
        _fail("--idle-days must be >= 0 and --idle-activity between 0 and 1")
    try:
        durations.parse(window)
    except ValueError as exc:
        _fail(f"--window: {exc}")
    prices, default_price = _prices(purchase_prices)
    try:
        catalog = loading.load_catalog(catalog_overrides)
    except loading.InputError as exc:
        _fail(str(exc))
    models = [m.strip() for m in gpu_models.split(",") if m.strip()]
    for model in [*models, *prices]:
        if catalog.get(model) is None:
            _fail(f"unknown GPU model {model!r}; known: {', '.join(catalog.ids)}")
    models = [g.id for m in models if (g := catalog.get(m)) is not None]
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    settings = fleet.Settings(group_by=group_by, idle_days=idle_days, idle_activity=idle_activity)

    wanted = [c.partition("=") for c in contexts] or [("", "", "")]
    clusters: list[ClusterData] = []
    for context, has_value, value in wanted:
        name = _context_name(kubeconfig, context or None)
        try:
            api = clients.api_client(kubeconfig=kubeconfig, context=context or None)
        except (kubernetes.config.ConfigException, OSError, ValueError) as exc:
            _fail(f"kubeconfig{f' context {context}' if context else ''}: {exc}")
        settings_prom = None
        if prometheus_url:
            matchers: tuple[tuple[str, str], ...] = ()
            if has_value or len(wanted) > 1:
                matchers = ((cluster_label, value if has_value else name),)
            settings_prom = dataclasses.replace(
                prometheus.settings_from(
                    config.PrometheusConnection(
                        url=prometheus_url,
                        bearer_token_file=prometheus_token_file,
                        ca_file=prometheus_ca_file,
                        verify_tls=not insecure_skip_tls_verify,
                    )
                ),
                matchers=matchers,
            )
        clusters.append(
            _read_cluster(
                name,
                api,
                namespaces,
                catalog,
                prometheus_settings=settings_prom,
                window=window,
                now=now,
            )
        )

    entries = [
        fleet.Entry(
            cluster=data.name,
            namespace=o.ref.namespace,
            name=o.ref.name,
            labels=data.labels.get(o.ref, {}),
            status=data.statuses[o.ref],
        )
        for data in clusters
        for o in data.objects
        if o.ref in data.statuses
    ]
    outcomes = _what_if(clusters, models, catalog, now, window)
    built = report_.build(
        entries,
        generated=now.isoformat().replace("+00:00", "Z"),
        clusters=[c.name for c in clusters],
        currency=catalog.currency,
        settings=settings,
        source="Prometheus" if prometheus_url else "the operator's statuses",
        catalog_rows=fleet.rows(entries, catalog, settings),
        consolidation=_consolidation(clusters, catalog, prices, default_price),
        what_if=outcomes,
    )
    text = render.render(built, output)
    if output_file is None:
        click.echo(text, nl=False)
    else:
        output_file.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output_file} ({output})", err=True)


def _what_if(
    clusters: Sequence[ClusterData],
    models: Sequence[str],
    catalog: gpus.Catalog,
    now: datetime.datetime,
    window: str,
) -> list[whatif.Outcome]:
    if not models:
        return []
    summed: dict[str, list[float]] = {m: [0.0, 0.0, 0.0, 0.0] for m in models}
    for data in clusters:
        usage = {ref: s.usage for ref, s in data.statuses.items() if s.usage is not None}
        for outcome in whatif.evaluate(
            data.objects,
            data.states,
            usage,
            models=models,
            stock=data.stock,
            catalog=catalog,
            table=catalogs.default_precisions(),
            now=now,
            window=window,
        ):
            total = summed[outcome.gpu_model]
            total[0] += outcome.monthly_cost
            total[1] += outcome.monthly_savings
            total[2] += outcome.gpus_needed
            total[3] += outcome.workloads_on_model
    return [
        whatif.Outcome(
            gpu_model=m,
            monthly_cost=round(v[0], 2),
            monthly_savings=round(v[1], 2),
            gpus_needed=round(v[2], 3),
            workloads_on_model=int(v[3]),
            currency=catalog.currency,
        )
        for m, v in summed.items()
    ]
