"""The usage source that reads Prometheus: one batched sweep, per-pod figures, workload profiles.

:class:`PrometheusUsageSource` implements :class:`gpu_rightsizer.ports.UsageSource` on
prometheus-api-client. It is synchronous (``requests`` underneath): the operator calls
:meth:`~PrometheusUsageSource.collect` in a worker thread (``asyncio.to_thread``) so the event
loop never blocks on Prometheus; the CLI calls it directly.

A sweep issues the fixed list of :func:`.queries.sweep` (instant queries, all evaluated at the
same time), files each answer's samples under their ``(namespace, pod)``, attributes the pods
to workloads (:mod:`.attribution`) and turns each workload's figures into a
:class:`~gpu_rightsizer.models.profiles.UsageProfile`. A figure with no series is left unset
(unknown), never taken as zero; the labels of ``vllm:cache_config_info`` are strings and are
parsed here, a missing or malformed one leaving its field unset. It never raises for the
backend's sake:
an unreachable server, a timeout, an HTTP error, an error body or an answer that is not a
Prometheus vector ends the sweep with :attr:`~gpu_rightsizer.ports.UsageReport.error` set (one
line naming the URL and what failed) and no profiles.
"""

from __future__ import annotations

import ast
import collections
import concurrent.futures
import dataclasses
import datetime
import json
import math
import pathlib
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pydantic
import requests
import urllib3.util
from prometheus_api_client import exceptions as prometheus_exceptions, prometheus_connect

from gpu_rightsizer import config, ports
from gpu_rightsizer.metrics import attribution, dialects, queries
from gpu_rightsizer.models import durations, engines, profiles, workloads

RETRY_STATUSES = (429, 500, 502, 503, 504)
_MAX_MESSAGE_CHARS = 300
_HTTP_ERROR = re.compile(r"^HTTP Status Code (?P<code>\d+) \((?P<body>.*)\)$", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class PrometheusSettings:
    """How to reach Prometheus (or anything speaking its API: Thanos, Mimir, VictoriaMetrics).

    A bearer token is sent as ``Authorization: Bearer ...``; ``bearer_token_file`` (which wins
    over ``bearer_token``) is read again at every sweep, so a rotated service-account token is
    picked up; so is ``password_file`` (which wins over ``password``) for basic auth.
    ``ca_file`` verifies the server against a custom CA bundle; ``verify_tls=False``
    skips verification altogether. Connection errors and 429/5xx answers are retried
    ``retries`` times with exponential backoff; a read timeout is not (the query would only
    time out again). ``resolution`` is the step of the coverage subqueries and must not
    exceed Prometheus' lookback delta (5 minutes by default). The series are restricted to the
    targets' namespaces when there are at most ``namespace_filter_limit`` of them (a longer
    regex only makes the URL long), else not at all.
    """

    url: str
    bearer_token: str | None = None
    bearer_token_file: pathlib.Path | None = None
    username: str | None = None
    password: str | None = None
    password_file: pathlib.Path | None = None
    ca_file: pathlib.Path | None = None
    verify_tls: bool = True
    timeout_seconds: float = 30.0
    retries: int = 3
    retry_backoff_seconds: float = 0.5
    resolution: str = queries.DEFAULT_RESOLUTION
    namespace_filter_limit: int = 50
    query_concurrency: int = 1
    """Queries of a sweep in flight at once (each is evaluated on one core of Prometheus)."""
    headers: tuple[tuple[str, str], ...] = ()
    """Extra request headers, e.g. ``(("X-Scope-OrgID", "team-a"),)`` for a multi-tenant store."""
    matchers: tuple[tuple[str, str], ...] = ()
    """Label equalities every selector carries, e.g. ``(("cluster", "eu-1"),)``: one cluster's
    series in a central Prometheus that holds several."""
    dialect: dialects.Dialect = dialects.DCGM
    """The metric and label names the cluster's series have (dcgm-exporter's
    ``--use-old-namespace``, Google Managed Prometheus: :mod:`.dialects`)."""


def settings_from(conn: config.PrometheusConnection) -> PrometheusSettings:
    """Settings from the operator's (or the CLI's) connection configuration; ValueError for an
    unknown metrics dialect."""
    return PrometheusSettings(
        url=conn.url,
        bearer_token_file=conn.bearer_token_file,
        username=conn.username,
        password_file=conn.password_file,
        ca_file=conn.ca_file,
        verify_tls=conn.verify_tls,
        timeout_seconds=conn.timeout_seconds,
        retries=conn.retries,
        dialect=dialects.by_name(conn.metrics_dialect),
        query_concurrency=conn.query_concurrency,
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


class _BadAnswerError(ValueError):
    """The answer to a query is not a Prometheus instant vector."""


class PrometheusUsageSource:
    """Usage profiles from Prometheus; synchronous, meant to run in a worker thread."""

    def __init__(
        self,
        settings: PrometheusSettings,
        *,
        clock: Callable[[], datetime.datetime] = _now,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self.url = settings.url.rstrip("/")

    @property
    def display_url(self) -> str:
        """The URL without any user name or password in it (for messages)."""
        parts = urllib.parse.urlsplit(self.url)
        netloc = parts.netloc.rpartition("@")[2]
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))

    def collect(
        self,
        targets: Sequence[ports.TargetPods],
        *,
        window: str,
        at: datetime.datetime | None = None,
    ) -> ports.UsageReport:
        """Profiles of ``targets``' workloads over ``window`` ending at ``at`` (default: now).

        Blocks for the length of the sweep. A naive ``at`` is taken as UTC. Workloads whose
        pods have no DCGM engine-activity series in the window are left out of the report; a
        workload without framebuffer series gets a profile whose memory is unknown.
        """
        scheme = urllib.parse.urlsplit(self.url).scheme
        if scheme not in ("http", "https"):
            return self._failed(0, "the URL must start with http:// or https://")
        end = self._clock() if at is None else at
        if end.tzinfo is None:
            end = end.replace(tzinfo=datetime.UTC)
        if not targets:
            return ports.UsageReport(profiles={}, queries=0)
        namespaces: set[str] | None = {t.namespace for t in targets}
        if namespaces is not None and len(namespaces) > self.settings.namespace_filter_limit:
            namespaces = None
        try:
            plan = queries.sweep(
                window,
                namespaces=namespaces,
                resolution=self.settings.resolution,
                matchers=dict(self.settings.matchers),
                dialect=self.settings.dialect,
            )
        except ValueError as exc:
            return self._failed(0, f"cannot build the queries: {exc}")
        try:
            headers, auth = self._credentials()
        except _CredentialsError as exc:
            return self._failed(0, str(exc))

        pods: dict[tuple[str, str], attribution.PodUsage] = {}
        params = {
            "time": f"{end.timestamp():.3f}",
            "timeout": f"{self.settings.timeout_seconds:g}",
        }
        failure = self._run(plan, params, headers, auth, pods)
        if failure is not None:
            return failure
        issued = len(plan)

        rules = {query.name: query.across_pods for query in plan}
        found = profiles_of(
            targets,
            pods.values(),
            rules=rules,
            window=window,
            end=end,
            resolution=self.settings.resolution,
        )
        return ports.UsageReport(profiles=found, queries=issued)

    # --- HTTP ---------------------------------------------------------------------------------

    def _run(
        self,
        plan: Sequence[queries.Query],
        params: Mapping[str, str],
        headers: Mapping[str, str],
        auth: tuple[str, str] | None,
        pods: dict[tuple[str, str], attribution.PodUsage],
    ) -> ports.UsageReport | None:
        """Issue the plan, ``query_concurrency`` queries at a time, answers taken in plan order.

        At most twice that many queries are sent ahead of the answer being filed, so a slow
        query holds a few decoded answers in memory, not the rest of the plan's (at 1,000
        workloads an answer is megabytes of dicts). None when every answer was filed under
        ``pods``; else the failed report (the first failing query in plan order; queries after
        it not yet sent are not sent).
        """
        workers = max(1, min(self.settings.query_concurrency, len(plan)))
        if workers == 1:
            client = self._client(headers, auth)
            try:
                for issued, query in enumerate(plan, 1):
                    try:
                        _absorb(query, client.custom_query(query.promql, params=dict(params)), pods)
                    except Exception as exc:  # every failure becomes report.error
                        return self._failed(issued, f"query {query.name}: {self._describe(exc)}")
            finally:
                client.close()
            return None
        local = threading.local()
        clients: list[Any] = []
        lock = threading.Lock()
        stop = threading.Event()

        def ask(query: queries.Query) -> object:
            if stop.is_set():
                raise concurrent.futures.CancelledError
            client = getattr(local, "client", None)
            if client is None:
                client = local.client = self._client(headers, auth)
                with lock:
                    clients.append(client)
            return client.custom_query(query.promql, params=dict(params))

        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="gpu-rightsizer-promql"
        )
        ahead = iter(plan)
        window: collections.deque[tuple[queries.Query, concurrent.futures.Future[object]]]
        window = collections.deque()

        def send_next() -> None:
            query = next(ahead, None)
            if query is not None:
                window.append((query, pool.submit(ask, query)))

        try:
            for _ in range(2 * workers):
                send_next()
            issued = 0
            while window:
                query, future = window.popleft()
                issued += 1
                try:
                    rows = future.result()
                    send_next()
                    _absorb(query, rows, pods)
                except Exception as exc:  # every failure becomes report.error
                    stop.set()
                    for _, later in window:
                        later.cancel()
                    return self._failed(issued, f"query {query.name}: {self._describe(exc)}")
        finally:
            pool.shutdown(wait=True)
            for client in clients:
                client.close()
        return None

    def _credentials(self) -> tuple[dict[str, str], tuple[str, str] | None]:
        """Request headers (bearer token) and basic auth; the files are read now."""
        settings = self.settings
        headers = dict(settings.headers)
        token = settings.bearer_token
        if settings.bearer_token_file is not None:
            token = _read_secret(settings.bearer_token_file, "bearer token file")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if settings.username is None:
            return headers, None
        password = settings.password or ""
        if settings.password_file is not None:
            password = _read_secret(settings.password_file, "password file")
        return headers, (settings.username, password)

    def _client(self, headers: Mapping[str, str], auth: tuple[str, str] | None) -> Any:
        settings = self.settings
        session = requests.Session()
        session.verify = str(settings.ca_file) if settings.ca_file else settings.verify_tls
        retry = urllib3.util.Retry(
            total=settings.retries,
            connect=settings.retries,
            read=False,
            status=settings.retries,
            other=0,
            allowed_methods=None,
            status_forcelist=RETRY_STATUSES,
            backoff_factor=settings.retry_backoff_seconds,
            raise_on_status=False,
        )
        options: dict[str, Any] = {
            "url": self.url,
            "headers": dict(headers),
            "retry": retry,
            "auth": auth,
            "session": session,
            "timeout": settings.timeout_seconds,
        }
        return prometheus_connect.PrometheusConnect(**options)

    def _failed(self, issued: int, what: str) -> ports.UsageReport:
        message = " ".join(f"Prometheus at {self.display_url}: {what}".split())
        if len(message) > _MAX_MESSAGE_CHARS:
            message = message[: _MAX_MESSAGE_CHARS - 3] + "..."
        return ports.UsageReport(profiles={}, queries=issued, error=message)

    def _describe(self, exc: BaseException) -> str:
        timeout = self.settings.timeout_seconds
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return f"no connection within {timeout:g} s"
        if isinstance(exc, requests.exceptions.ReadTimeout):
            return f"no answer within {timeout:g} s"
        if isinstance(exc, requests.exceptions.SSLError):
            return f"TLS error: {_root_cause(exc)}"
        if isinstance(exc, requests.exceptions.ConnectionError):
            return f"cannot connect: {_root_cause(exc)}"
        if isinstance(exc, prometheus_exceptions.PrometheusApiClientException):
            return _http_error(str(exc))
        if isinstance(exc, _BadAnswerError):
            return str(exc)
        not_json = "the answer is not Prometheus JSON (is the URL Prometheus' API root?)"
        if isinstance(exc, requests.exceptions.JSONDecodeError):
            return not_json
        if isinstance(exc, requests.RequestException):
            return f"request failed: {_root_cause(exc)}"
        if isinstance(exc, ValueError | KeyError | TypeError):
            return not_json
        return f"{type(exc).__name__}: {exc}"


class _CredentialsError(Exception):
    """A token or password file that cannot be read (the message says which)."""


def _read_secret(path: pathlib.Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _CredentialsError(f"cannot read {what} {path}: {reason}") from None


def _root_cause(exc: BaseException) -> str:
    """The innermost reason of a requests/urllib3 error, without object reprs."""
    seen: set[int] = set()
    current: BaseException | None = exc
    deepest: BaseException = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        deepest = current
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            current = reason
        elif current.args and isinstance(current.args[0], BaseException):
            current = current.args[0]
        else:
            current = current.__cause__ or current.__context__
    if isinstance(deepest, OSError) and deepest.strerror:
        return deepest.strerror
    text = re.sub(r"<[^>]*>:?\s*", "", str(deepest))
    text = re.sub(r"^\w+\([^)]*\):\s*", "", text)
    return text or type(deepest).__name__


def _http_error(message: str) -> str:
    """``HTTP 400: bad_data: <error>`` from prometheus-api-client's exception text."""
    match = _HTTP_ERROR.match(message)
    if match is None:
        return message
    body_text = match["body"]
    try:
        raw = ast.literal_eval(body_text)
        body = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    except (ValueError, SyntaxError):
        body = body_text
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and parsed.get("error"):
        kind = parsed.get("errorType")
        detail = f"{kind}: {parsed['error']}" if kind else str(parsed["error"])
    else:
        detail = body.strip() or "empty body"
    return f"HTTP {match['code']}: {detail}"


# --- answers -> per-pod figures ---------------------------------------------------------------


def _absorb(
    query: queries.Query, rows: object, pods: dict[tuple[str, str], attribution.PodUsage]
) -> None:
    """File one answer's samples under their pods; _BadAnswerError if it is not a vector."""
    if not isinstance(rows, list):
        raise _BadAnswerError("the answer is not an instant vector")
    for row in rows:
        try:
            metric = row["metric"]
            value = float(row["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            raise _BadAnswerError(f"malformed sample in the answer: {str(row)[:80]}") from None
        if not isinstance(metric, dict):
            raise _BadAnswerError("malformed labels in the answer")
        namespace = metric.get(queries.NAMESPACE)
        pod = metric.get(queries.POD)
        if not namespace or not pod or not math.isfinite(value):
            continue
        usage = pods.get((namespace, pod))
        if usage is None:
            usage = pods[(namespace, pod)] = attribution.PodUsage(namespace=namespace, pod=pod)
        if query.name == queries.GPUS:
            usage.gpus.append(
                attribution.GpuKind(
                    model=metric.get(queries.MODEL_NAME) or None,
                    mig_profile=metric.get(queries.MIG_PROFILE) or None,
                    count=round(value),
                )
            )
        elif query.name == queries.CACHE_CONFIG:
            for name, figure in cache_config_figures(metric).items():
                previous = usage.values.get(name)
                usage.values[name] = figure if previous is None else max(previous, figure)
        else:
            previous = usage.values.get(query.name)
            usage.values[query.name] = value if previous is None else max(previous, value)


def _label_number(value: object) -> float | None:
    """A label's text as a finite number, or None (labels are strings; any may be garbage)."""
    if not isinstance(value, str) or len(value) > 32:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _label_count(value: object) -> int | None:
    """A label's text as a whole number >= 0 (``"28160"``, ``"28160.0"``), or None."""
    number = _label_number(value)
    if number is None or number < 0 or not number.is_integer():
        return None
    return int(number)


def cache_config_figures(labels: Mapping[str, object]) -> dict[str, float]:
    """What one ``vllm:cache_config_info`` label set says: the KV-cache pool in tokens
    (``num_gpu_blocks`` x ``block_size``) and ``gpu_memory_utilization``, each only when its
    labels parse (a pool of 0 blocks is 0 tokens, a block of 0 tokens is malformed; a
    utilisation must lie in (0, 1])."""
    out: dict[str, float] = {}
    blocks = _label_count(labels.get(queries.NUM_GPU_BLOCKS))
    block_size = _label_count(labels.get(queries.BLOCK_SIZE))
    if blocks is not None and block_size is not None and block_size > 0:
        out[queries.KV_CACHE_CAPACITY_TOKENS] = float(blocks * block_size)
    utilization = _label_number(labels.get(queries.GPU_MEMORY_UTILIZATION))
    if utilization is not None and 0 < utilization <= 1:
        out[queries.GPU_MEMORY_UTILIZATION_FIGURE] = utilization
    return out


# --- workload figures -> usage profile --------------------------------------------------------

_ORDERED = (
    queries.Statistic.P50,
    queries.Statistic.P95,
    queries.Statistic.P99,
    queries.Statistic.MAX,
)


def _figures(
    values: Mapping[str, float], signal: queries.Signal | queries.Histogram
) -> dict[str, float] | None:
    """A signal's p50, p95, p99, max (and mean), made consistent; None when it has none.

    Each figure is the maximum over series, and quantiles of different series need not be
    ordered after that, so each percentile is raised to the one below it (cumulative maximum).
    A missing figure (a pod that appeared between two queries) takes the largest present one.
    Negative figures become 0, fractions are clipped to 1, the mean to the maximum.
    """
    limit = 1.0 if signal.fraction else math.inf

    def clip(value: float) -> float:
        return min(max(value, 0.0), limit)

    found = {
        s: clip(v)
        for s in _ORDERED
        if (v := values.get(queries.statistic_name(signal, s))) is not None and math.isfinite(v)
    }
    if not found:
        return None
    fill = max(found.values())
    out: dict[str, float] = {}
    previous = 0.0
    for statistic in _ORDERED:
        previous = max(found.get(statistic, fill), previous)
        out[statistic.value] = previous
    mean = values.get(queries.statistic_name(signal, queries.Statistic.MEAN))
    if mean is not None and math.isfinite(mean):
        # No more than the maximum: the two can come from different series (or be nonsense).
        out[queries.Statistic.MEAN.value] = min(clip(mean), previous)
    return out


def _percentiles(
    values: Mapping[str, float], signal: queries.Signal | queries.Histogram
) -> profiles.Percentiles | None:
    figures = _figures(values, signal)
    return None if figures is None else profiles.Percentiles.model_validate(figures)


def _fractions(values: Mapping[str, float], signal: queries.Signal) -> profiles.Fractions | None:
    figures = _figures(values, signal)
    return None if figures is None else profiles.Fractions.model_validate(figures)


def _whole(value: float | None) -> int | None:
    """A count from a figure: rounded, at least 0; None when unknown or not finite (the sum of
    the pods' sample counts can overflow where one pod reports nonsense)."""
    if value is None or not math.isfinite(value):
        return None
    return max(round(value), 0)


def build_profile(
    usage: attribution.WorkloadUsage, *, window: str, end: datetime.datetime
) -> profiles.UsageProfile | None:
    """A workload's usage profile, or None without engine figures (required).

    Memory is unknown (None) without framebuffer series; ``coverage`` is the workload's
    (:func:`.attribution.coverage`), 0 when it has none; the observed history runs from its
    first step (a step before the window: all of the window) to ``end``.
    """
    values = usage.values
    graphics = _fractions(values, queries.GRAPHICS_ENGINE_ACTIVE)
    if graphics is None:
        return None
    window_seconds = durations.parse(window).total_seconds()
    coverage = values.get(queries.COVERAGE, 0.0)
    first_step = values.get(queries.FIRST_STEP)
    observed = None if first_step is None else end.timestamp() - first_step
    preemptions = values.get(queries.PREEMPTIONS)
    capacity = values.get(queries.KV_CACHE_CAPACITY_TOKENS)
    if capacity is None:
        capacity = values.get(queries.KV_CAPACITY)
    utilization = values.get(queries.GPU_MEMORY_UTILIZATION_FIGURE)
    code = values.get(queries.SERVING_ENGINE)
    name = queries.ENGINE_CODES.get(float(round(code))) if code is not None else None
    engine = engines.ServingEngine(name) if name is not None else None
    try:
        return profiles.UsageProfile(
            window=window,
            end=end,
            samples=_whole(values.get(queries.SAMPLES)) or 0,
            coverage=min(max(coverage, 0.0), 1.0),
            observed_seconds=None if observed is None else min(max(observed, 0.0), window_seconds),
            gpu_model=usage.gpu_model,
            mig_profile=usage.mig_profile,
            gpus=usage.gpus if usage.gpus is not None and usage.gpus >= 1 else None,
            memory_used_bytes=_percentiles(values, queries.MEMORY_USED_BYTES),
            graphics_engine_active=graphics,
            tensor_active=_fractions(values, queries.TENSOR_ACTIVE),
            dram_active=_fractions(values, queries.DRAM_ACTIVE_SIGNAL),
            power_watts=_percentiles(values, queries.POWER_WATTS),
            serving_engine=engine,
            kv_cache_usage=_fractions(values, queries.KV_CACHE_USAGE_SIGNAL),
            kv_cache_capacity_tokens=_whole(capacity),
            gpu_memory_utilization=(
                utilization if utilization is not None and 0 < utilization <= 1 else None
            ),
            time_per_output_token_seconds=_percentiles(
                values, queries.TIME_PER_OUTPUT_TOKEN_SECONDS
            ),
            time_to_first_token_seconds=_percentiles(values, queries.TIME_TO_FIRST_TOKEN_SECONDS),
            preemptions=_whole(preemptions),
            requests_waiting=_percentiles(values, queries.REQUESTS_WAITING_SIGNAL),
        )
    except pydantic.ValidationError:
        return None


def profiles_of(
    targets: Sequence[ports.TargetPods],
    pods: Iterable[attribution.PodUsage],
    *,
    rules: Mapping[str, queries.AcrossPods],
    window: str,
    end: datetime.datetime,
    resolution: str = queries.DEFAULT_RESOLUTION,
) -> dict[workloads.WorkloadRef, profiles.UsageProfile]:
    """Profiles of the targets' workloads from per-pod figures (what :meth:`collect` does
    after the queries); ``resolution`` is the sweep's coverage step."""
    grid = dataclasses.replace(queries.grid(window, resolution), end=end.timestamp())
    found: dict[workloads.WorkloadRef, profiles.UsageProfile] = {}
    for ref, members in attribution.attribute(targets, pods).items():
        combined = attribution.combine(members, rules, grid)
        profile = build_profile(combined, window=window, end=end)
        if profile is not None:
            found[ref] = profile
    return found
