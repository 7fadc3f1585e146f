"""``gpu-rightsizer`` commands: ``run``, ``recommend``, ``catalog``, ``plan``, ``approve``,
``agent``, ``report``."""

from __future__ import annotations

import datetime
import pathlib
import sys
from typing import NoReturn

import click

from gpu_rightsizer import __version__, catalogs, config, decision, ports
from gpu_rightsizer.cli import acting, agent, formatting, loading, report
from gpu_rightsizer.kube import reading
from gpu_rightsizer.metrics import dialects
from gpu_rightsizer.models import crd, durations, workloads

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
    help="Usage-profile JSON or YAML (docs/usage-profile.md) (repeatable).",
)
@click.option(
    "--prometheus-url",
    default=None,
    help="Read usage from this Prometheus (DCGM and vLLM series) instead of --usage files.",
)
@click.option(
    "--prometheus-token-file",
    type=_FILE,
    default=None,
    help="Bearer token for --prometheus-url, read from this file.",
)
@click.option(
    "--prometheus-ca-file", type=_FILE, default=None, help="CA bundle for an HTTPS Prometheus."
)
@click.option(
    "--insecure-skip-tls-verify",
    is_flag=True,
    help="Do not verify the Prometheus server's certificate (not recommended).",
)
@click.option("--prometheus-username", default=None, help="Basic-auth user for --prometheus-url.")
@click.option(
    "--prometheus-password-file",
    type=_FILE,
    default=None,
    help="Basic-auth password for --prometheus-username, read from this file.",
)
@click.option(
    "--metrics-dialect",
    type=click.Choice(dialects.NAMES),
    default=dialects.DCGM.name,
    show_default=True,
    help="Metric and label names of the DCGM series (see README, Metric dialects).",
)
@click.option(
    "--window", default="7d", show_default=True, help="Look-back of the Prometheus queries."
)
@click.option(
    "--at",
    "at_text",
    default=None,
    help="Evaluate at this past instant (RFC 3339, e.g. 2026-11-20T12:00:00Z); default now.",
)
@click.option(
    "--catalog-overrides",
    type=_FILE,
    default=None,
    help="YAML/JSON overriding prices, currency, PUE and grid carbon intensity.",
)
@click.option(
    "--kubeconfig",
    type=_FILE,
    default=None,
    help="Read the cluster's GPU nodes (the inventory to recommend from) with this kubeconfig.",
)
@click.option(
    "-o", "--output", type=click.Choice(formatting.FORMATS), default="table", show_default=True
)
def recommend(
    files: tuple[pathlib.Path, ...],
    usage_files: tuple[pathlib.Path, ...],
    prometheus_url: str | None,
    prometheus_token_file: pathlib.Path | None,
    prometheus_ca_file: pathlib.Path | None,
    insecure_skip_tls_verify: bool,
    prometheus_username: str | None,
    prometheus_password_file: pathlib.Path | None,
    metrics_dialect: str,
    window: str,
    at_text: str | None,
    catalog_overrides: pathlib.Path | None,
    kubeconfig: pathlib.Path | None,
    output: str,
) -> None:
    """Recommend right-sized GPU allocations from manifests, without a cluster.

    Usage comes from usage-profile files (--usage) or from a live Prometheus
    (--prometheus-url), with the same queries the operator runs. -o json prints, for each
    GPUWorkload, {"namespace", "name", "status"} where status is exactly what the operator
    writes: both run the same decision. Node objects in the files (or the cluster's nodes with
    --kubeconfig) are the inventory recommendations are drawn from; without any, the whole
    catalog is considered, and the output says so.
    """
    if bool(usage_files) == bool(prometheus_url):
        _fail("give either --usage FILE or --prometheus-url URL")
    try:
        durations.parse(window)
    except ValueError as exc:
        _fail(f"--window: {exc}")
    at = _parse_at(at_text)
    try:
        catalog = loading.load_catalog(catalog_overrides)
        manifests = loading.read_manifests(files)
        if prometheus_url:
            conn = config.PrometheusConnection(
                url=prometheus_url,
                bearer_token_file=prometheus_token_file,
                username=prometheus_username,
                password_file=prometheus_password_file,
                ca_file=prometheus_ca_file,
                verify_tls=not insecure_skip_tls_verify,
                metrics_dialect=metrics_dialect,
            )
            usage = loading.read_prometheus(manifests, conn, window=window, at=at)
        else:
            usage = loading.read_usage(usage_files)
        # Bad input is one line naming the file and field, before anything is decided.
        loading.check_workloads(manifests, usage, catalog)
        stock = loading.read_inventory(manifests, catalog, kubeconfig)
    except loading.InputError as exc:
        _fail(str(exc))
    objects = loading.objects(manifests)
    specs = {o.ref: decision.validate(o) for o in objects}
    refs = [
        (o.ref, spec.target_ref.kind, spec.target_ref.name, spec.target_ref.container)
        for o in objects
        if isinstance(spec := specs[o.ref], crd.GPUWorkloadSpec)
    ]
    states = reading.resolve(loading.snapshot(manifests), refs)
    report = ports.UsageReport(
        profiles={
            workloads.WorkloadRef(namespace=ns, name=name): profile
            for (ns, name), profile in usage.items()
        },
        queries=0,
    )
    now = at or datetime.datetime.now(datetime.UTC)
    decided = decision.decide(
        objects,
        specs,
        states,
        report,
        catalog=catalog,
        table=catalogs.default_precisions(),
        now=now,
        settings=decision.Settings(window=window),
        stock=stock,
    )
    results = [
        (r.ref.namespace, r.ref.name, crd.GPUWorkloadStatus.model_validate(r.document))
        for r in decided
    ]
    if stock is None and output == "table":
        click.echo(
            "note: no Node objects in the files and no --kubeconfig: recommending from the whole "
            "catalog, whatever the cluster has",
            err=True,
        )
    if output == "table":
        click.echo(formatting.recommendations_table(results))
    else:
        data = [
            {"namespace": r.ref.namespace, "name": r.ref.name, "status": r.document}
            for r in decided
        ]
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


@cli.command(context_settings={"auto_envvar_prefix": "GPU_RIGHTSIZER"})
@click.option(
    "--prometheus-url",
    required=True,
    envvar="GPU_RIGHTSIZER_PROMETHEUS_URL",
    help="Prometheus with DCGM (and vLLM) metrics.",
)
@click.option("--prometheus-token-file", type=_FILE, envvar="GPU_RIGHTSIZER_PROMETHEUS_TOKEN_FILE")
@click.option("--prometheus-username", envvar="GPU_RIGHTSIZER_PROMETHEUS_USERNAME")
@click.option(
    "--prometheus-password-file", type=_FILE, envvar="GPU_RIGHTSIZER_PROMETHEUS_PASSWORD_FILE"
)
@click.option("--prometheus-ca-file", type=_FILE, envvar="GPU_RIGHTSIZER_PROMETHEUS_CA_FILE")
@click.option(
    "--insecure-skip-tls-verify",
    is_flag=True,
    envvar="GPU_RIGHTSIZER_INSECURE_SKIP_TLS_VERIFY",
    help="Do not verify Prometheus' certificate.",
)
@click.option(
    "--metrics-dialect",
    type=click.Choice(dialects.NAMES),
    default=dialects.DCGM.name,
    show_default=True,
    envvar="GPU_RIGHTSIZER_METRICS_DIALECT",
    help="Metric and label names of the DCGM series (see README, Metric dialects).",
)
@click.option(
    "--prometheus-timeout",
    default="30s",
    show_default=True,
    envvar="GPU_RIGHTSIZER_PROMETHEUS_TIMEOUT",
    help="Timeout of one PromQL query.",
)
@click.option(
    "--interval",
    default="5m",
    show_default=True,
    envvar="GPU_RIGHTSIZER_INTERVAL",
    help="Re-evaluate every workload this often (jittered by 10%).",
)
@click.option("--window", default="7d", show_default=True, envvar="GPU_RIGHTSIZER_WINDOW")
@click.option(
    "-n",
    "--namespace",
    "namespaces",
    multiple=True,
    envvar="GPU_RIGHTSIZER_NAMESPACES",
    help="Watch only these namespaces (repeatable); default: the whole cluster.",
)
@click.option("--kubeconfig", type=_FILE, envvar="KUBECONFIG")
@click.option("--catalog-overrides", type=_FILE, envvar="GPU_RIGHTSIZER_CATALOG_OVERRIDES")
@click.option(
    "--metrics-port",
    type=int,
    default=8000,
    show_default=True,
    envvar="GPU_RIGHTSIZER_METRICS_PORT",
    help="Port of the operator's own /metrics (0 disables).",
)
@click.option(
    "--metrics-bind-address",
    default="0.0.0.0",
    show_default=True,
    envvar="GPU_RIGHTSIZER_METRICS_BIND_ADDRESS",
    help="Address /metrics listens on (127.0.0.1: this host only; :: for IPv6).",
)
@click.option(
    "--liveness",
    default="http://0.0.0.0:8080/healthz",
    show_default=True,
    envvar="GPU_RIGHTSIZER_LIVENESS",
    help="kopf liveness endpoint (empty disables).",
)
@click.option(
    "--peering",
    default=None,
    envvar="GPU_RIGHTSIZER_PEERING",
    help="kopf peering name when several replicas run; default: standalone.",
)
@click.option(
    "--savings-event-fraction",
    type=float,
    default=0.1,
    show_default=True,
    help="Emit an Event when projected savings move by more than this fraction.",
)
@click.option(
    "--log-format", type=click.Choice(["json", "console"]), default="json", show_default=True
)
@click.option("--log-level", default="INFO", show_default=True)
def run(
    prometheus_url: str,
    prometheus_token_file: pathlib.Path | None,
    prometheus_username: str | None,
    prometheus_password_file: pathlib.Path | None,
    prometheus_ca_file: pathlib.Path | None,
    insecure_skip_tls_verify: bool,
    metrics_dialect: str,
    prometheus_timeout: str,
    interval: str,
    window: str,
    namespaces: tuple[str, ...],
    kubeconfig: pathlib.Path | None,
    catalog_overrides: pathlib.Path | None,
    metrics_port: int,
    metrics_bind_address: str,
    liveness: str,
    peering: str | None,
    savings_event_fraction: float,
    log_format: str,
    log_level: str,
) -> None:
    """Run the operator: keep every GPUWorkload's status true."""
    from gpu_rightsizer.handlers import running  # noqa: PLC0415 (kopf only when running)

    try:
        interval_seconds = durations.parse(interval).total_seconds()
        timeout_seconds = durations.parse(prometheus_timeout).total_seconds()
        durations.parse(window)
        loading.load_catalog(catalog_overrides)
    except (ValueError, loading.InputError) as exc:
        _fail(str(exc))
    cfg = config.OperatorConfig(
        prometheus=config.PrometheusConnection(
            url=prometheus_url,
            bearer_token_file=prometheus_token_file,
            username=prometheus_username,
            password_file=prometheus_password_file,
            ca_file=prometheus_ca_file,
            verify_tls=not insecure_skip_tls_verify,
            timeout_seconds=timeout_seconds,
            metrics_dialect=metrics_dialect,
        ),
        interval_seconds=interval_seconds,
        window=window,
        namespaces=tuple(n for ns in namespaces for n in ns.split(",") if n),
        kubeconfig=kubeconfig,
        catalog_overrides=catalog_overrides,
        metrics_port=metrics_port or None,
        metrics_bind_address=metrics_bind_address,
        savings_event_fraction=savings_event_fraction,
    )
    running.run(
        cfg,
        liveness=liveness or None,
        peering=peering,
        log_format=log_format,
        log_level=log_level,
    )


def _parse_at(text: str | None) -> datetime.datetime | None:
    if text is None:
        return None
    try:
        value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        _fail(f"--at: {text!r} is not an RFC 3339 time (e.g. 2026-11-20T12:00:00Z)")
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


cli.add_command(acting.plan)
cli.add_command(acting.approve)
cli.add_command(agent.agent)
cli.add_command(report.report)


def main() -> None:
    cli()
