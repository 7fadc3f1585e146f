"""``gpu-rightsizer plan`` and ``gpu-rightsizer approve``: what Apply mode will change, and the
approval that lets it.

Both read the GPUWorkload, its target and the cluster's GPU nodes, and compute the plan with the
same pure function the operator uses (:func:`gpu_rightsizer.apply.planning.plan_for`), so what a
person reviews is exactly what the operator applies.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from typing import Any, NoReturn

import click
import kubernetes.config
import pydantic

from gpu_rightsizer.apply import patches, planning
from gpu_rightsizer.cli import loading
from gpu_rightsizer.kube import clients, errors, objects, reading
from gpu_rightsizer.manifests import nodes
from gpu_rightsizer.models import crd

_FILE = click.Path(path_type=pathlib.Path, dir_okay=False)


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@dataclasses.dataclass(frozen=True)
class Planned:
    name: str
    spec: crd.GPUWorkloadSpec
    status: crd.GPUWorkloadStatus
    plan: crd.Plan


def _condition(status: crd.GPUWorkloadStatus, *types: str) -> str:
    for kind in types:
        for c in status.conditions:
            if c.type == kind:
                return f"{kind}={c.status} ({c.reason}): {c.message}"
    return "the operator has not evaluated it yet"


def _planned(
    namespace: str, name: str, kubeconfig: pathlib.Path | None, context: str | None
) -> tuple[Any, Planned]:
    try:
        api = clients.api_client(kubeconfig=kubeconfig, context=context)
    except (kubernetes.config.ConfigException, OSError, ValueError) as exc:
        _fail(f"kubeconfig: {exc}")
    where = f"gpuworkload {namespace}/{name}"
    try:
        body = objects.get_gpuworkload(api, namespace, name)
    except errors.ClusterReadError as exc:
        if exc.status == 404:
            _fail(f'gpuworkloads.gpu-rightsizer.dev "{name}" not found in namespace {namespace}')
        _fail(str(exc))
    try:
        spec = crd.GPUWorkloadSpec.model_validate(body.get("spec") or {})
        status = crd.GPUWorkloadStatus.model_validate(body.get("status") or {})
    except pydantic.ValidationError as exc:
        _fail(f"{where}: {loading.first_error(exc)}")
    rec = status.recommendation
    if rec is None or status.current is None:
        _fail(
            f"{where} has no recommendation to plan: "
            f"{_condition(status, 'RecommendationReady', 'Ready')}"
        )
    ref = spec.target_ref
    try:
        target = objects.get_target(api, ref.kind, namespace, ref.name)
        listed = reading.KubeClusterReader(api).snapshot()
    except errors.ClusterReadError as exc:
        _fail(str(exc))
    try:
        catalog = loading.load_catalog(None)
    except loading.InputError as exc:
        _fail(str(exc))
    stock = nodes.build(listed.nodes, listed.pods, catalog, source="the cluster's GPU nodes")
    try:
        plan = planning.plan_for(spec, target, status.current, rec, stock=stock, catalog=catalog)
    except patches.PlanError as exc:
        _fail(f"{where}: cannot plan {rec.describe()} ({exc.reason}): {exc}")
    if status.plan is not None and status.plan.recommendation_id != rec.id:
        click.echo(
            f"note: status.plan is for recommendation {status.plan.recommendation_id}, the "
            f"current one is {rec.id}: showing the plan for {rec.id}",
            err=True,
        )
    return api, Planned(name, spec, status, plan)


_COMMON = [
    click.option("-n", "--namespace", default="default", show_default=True),
    click.argument("name"),
    click.option("--kubeconfig", type=_FILE, envvar="KUBECONFIG", default=None),
    click.option("--context", default=None, help="The kubeconfig context to use."),
]


def _common(f: Any) -> Any:
    for option in reversed(_COMMON):
        f = option(f)
    return f


def _show(plan: crd.Plan) -> None:
    click.echo(plan.diff if plan.diff else f"no changes: {plan.target} already has it")


@click.command()
@_common
@click.option(
    "-o",
    "--output",
    type=click.Choice(["diff", "yaml"]),
    default="diff",
    show_default=True,
    help="diff: like kubectl diff; yaml: a strategic-merge patch, ready to commit.",
)
def plan(
    namespace: str, name: str, kubeconfig: pathlib.Path | None, context: str | None, output: str
) -> None:
    """Show exactly what applying the recommendation changes on the GPUWorkload's target."""
    _, planned = _planned(namespace, name, kubeconfig, context)
    if output == "yaml":
        click.echo(planned.plan.patch, nl=False)
    else:
        _show(planned.plan)


@click.command()
@_common
@click.option("--id", "wanted", default=None, help="The recommendation id to approve.")
@click.option("--dry-run", is_flag=True, help="Only show the plan; approve nothing.")
def approve(
    namespace: str,
    name: str,
    kubeconfig: pathlib.Path | None,
    context: str | None,
    wanted: str | None,
    dry_run: bool,
) -> None:
    """Show the plan, then approve the current recommendation (Apply mode, Manual approval)."""
    api, planned = _planned(namespace, name, kubeconfig, context)
    where = f"gpuworkload {namespace}/{name}"
    if planned.spec.mode != crd.Mode.APPLY:
        _fail(f"{where}: mode is {planned.spec.mode}, not Apply: nothing would act on it")
    if planned.spec.apply.approval != crd.Approval.MANUAL:
        _fail(f"{where}: apply.approval is Automatic: there is nothing to approve")
    rec = planned.status.recommendation
    assert rec is not None and rec.id
    if wanted is not None and wanted != rec.id:
        _fail(f"{where}: --id {wanted} is not the current recommendation ({rec.id})")
    _show(planned.plan)
    if dry_run:
        click.echo(f"gpuworkload.gpu-rightsizer.dev/{name} not approved (dry run, id {rec.id})")
        return
    try:
        objects.annotate_gpuworkload(api, namespace, name, planning.APPROVE_ANNOTATION, rec.id)
    except errors.WriteError as exc:
        _fail(str(exc))
    click.echo(f"gpuworkload.gpu-rightsizer.dev/{name} approved (id {rec.id})")
