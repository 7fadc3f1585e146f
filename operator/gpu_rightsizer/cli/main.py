"""``gpu-rightsizer`` commands: ``recommend`` and ``catalog``."""

from __future__ import annotations

import datetime
import pathlib
import sys
from typing import NoReturn

import click

from gpu_rightsizer import __version__, catalogs
from gpu_rightsizer.cli import formatting, loading
from gpu_rightsizer.models import crd
from gpu_rightsizer.recommend import engine, statuses

_FILE = click.Path(path_type=pathlib.Path, dir_okay=False)


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gpu-rightsizer")
def cli() -> None:
    """Find GPU waste in Kubernetes workloads and right-size them."""


@cli.command()
@click.option(
    "-f",
    "--filename",
    "files",
    type=_FILE,
    multiple=True,
    required=True,
    help="YAML with GPUWorkloads and their target Deployments/StatefulSets (repeatable).",
)
@click.option(
    "--usage",
    "usage_files",
    type=_FILE,
    multiple=True,
    required=True,
    help="Usage-profile JSON or YAML (docs/usage-profile.md) (repeatable).",
)
@click.option(
    "--catalog-overrides",
    type=_FILE,
    default=None,
    help="YAML/JSON overriding prices, currency, PUE and grid carbon intensity.",
)
@click.option(
    "-o", "--output", type=click.Choice(formatting.FORMATS), default="table", show_default=True
)
def recommend(
    files: tuple[pathlib.Path, ...],
    usage_files: tuple[pathlib.Path, ...],
    catalog_overrides: pathlib.Path | None,
    output: str,
) -> None:
    """Recommend right-sized GPU allocations, offline, from manifests and usage profiles.

    -o json prints, for each GPUWorkload, {"namespace", "name", "status"} where status is
    exactly what the operator writes.
    """
    try:
        catalog = loading.load_catalog(catalog_overrides)
        manifests = loading.read_manifests(files)
        usage = loading.read_usage(usage_files)
        loaded = loading.build_workloads(manifests, usage, catalog)
    except loading.InputError as exc:
        _fail(str(exc))
    evaluations = engine.evaluate(
        [item.workload for item in loaded], catalog, catalogs.default_precisions()
    )
    now = datetime.datetime.now(datetime.UTC)
    results: list[tuple[str, str, crd.GPUWorkloadStatus]] = []
    for item, evaluation in zip(loaded, evaluations, strict=True):
        status = statuses.build(evaluation, generation=item.generation, now=now)
        ref = item.workload.ref
        results.append((ref.namespace, ref.name, status))
    if output == "table":
        click.echo(formatting.recommendations_table(results))
    else:
        data = [{"namespace": ns, "name": n, "status": s.to_api()} for ns, n, s in results]
        click.echo(formatting.dump(data, output))


@cli.command()
@click.option("--catalog-overrides", type=_FILE, default=None, help="Overrides file to apply.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def catalog(catalog_overrides: pathlib.Path | None, output: str) -> None:
    """Print the GPU catalog and the prices and energy factors in force."""
    try:
        cat = loading.load_catalog(catalog_overrides)
    except loading.InputError as exc:
        _fail(str(exc))
    if output == "json":
        click.echo(formatting.dump(cat.to_api(), "json"))
    else:
        click.echo(formatting.catalog_table(cat))


def main() -> None:
    cli()
