"""The PromQL of a sweep: golden text, escaping, and a query count that never grows.

The rendered queries for a 7-day window live in ``tests/golden/promql/<name>.txt`` (and, per
metrics dialect other than the default, in ``tests/golden/promql/dialect-<dialect>/``). After an
intended change, rewrite them with ``UPDATE_GOLDEN=1 pytest tests/unit/test_metrics_queries.py``
and review the diff.
"""

from __future__ import annotations

import ast
import os
import pathlib
import re

import hypothesis
import hypothesis.strategies as st
import pytest

from gpu_rightsizer.metrics import dialects, queries

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "golden" / "promql"
FILTERED = GOLDEN / "namespace-filter"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def _check_golden(folder: pathlib.Path, rendered: dict[str, str]) -> None:
    """Compare (or, with UPDATE_GOLDEN=1, rewrite) one file per query in ``folder``."""
    if UPDATE:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.txt"):
            if stale.stem not in rendered:
                stale.unlink()
        for name, promql in rendered.items():
            (folder / f"{name}.txt").write_text(promql + "\n", encoding="utf-8")
    on_disk = {p.stem: p.read_text(encoding="utf-8") for p in folder.glob("*.txt")}
    assert sorted(on_disk) == sorted(rendered), "golden files differ; UPDATE_GOLDEN=1 rewrites"
    for name, promql in rendered.items():
        assert on_disk[name] == promql + "\n", f"{folder.name}/{name}.txt (UPDATE_GOLDEN=1)"


def test_the_sweep_matches_the_golden_promql() -> None:
    _check_golden(GOLDEN, {q.name: q.promql for q in queries.sweep("7d")})


def test_a_namespace_filter_matches_the_golden_promql() -> None:
    sweep = queries.sweep("7d", namespaces=["search", "ml", 'we"ird\\ns.x'])
    _check_golden(FILTERED, {q.name: q.promql for q in sweep if q.name == queries.SAMPLES})


@pytest.mark.parametrize("dialect", [d for d in dialects.NAMES if d != dialects.DCGM.name])
def test_each_dialect_matches_its_golden_promql(dialect: str) -> None:
    sweep = queries.sweep("7d", dialect=dialects.by_name(dialect))
    _check_golden(GOLDEN / f"dialect-{dialect}", {q.name: q.promql for q in sweep})


@pytest.mark.parametrize("dialect", dialects.NAMES)
def test_every_dialect_issues_the_same_queries_in_the_same_order(dialect: str) -> None:
    default = queries.sweep("7d", namespaces=["ml"], matchers={"cluster": "eu-1"})
    other = queries.sweep(
        "7d", namespaces=["ml"], matchers={"cluster": "eu-1"}, dialect=dialects.by_name(dialect)
    )
    assert [(q.name, q.across_pods) for q in other] == [(q.name, q.across_pods) for q in default]
    for query in other:
        assert query.promql.count("(") == query.promql.count(")"), query.name
        # Every selector carries the cluster matcher and the namespace filter.
        selectors = re.findall(r"\{([^{}]*)\}", query.promql)
        assert selectors, query.name
        for selector in selectors:
            assert 'cluster="eu-1"' in selector, (query.name, selector)
            assert '=~"ml"' in selector, (query.name, selector)


def test_the_old_namespace_dialect_reads_dcgm_exporters_old_names_and_labels() -> None:
    sweep = queries.sweep("7d", dialect=dialects.DCGM_OLD_NAMESPACE)
    by_name = {q.name: q.promql for q in sweep}
    memory = by_name["memory_used_bytes_p95"]
    # The node agent's series keep their own labels; dcgm-exporter's are the old ones.
    dcgm_part = memory.split(" or max by (namespace, pod) (")[-1]
    assert 'dcgm_fb_used{pod_name!=""}[7d]' in memory
    assert "DCGM_FI_DEV_FB_USED" not in memory
    assert "by (pod_namespace, pod_name)" in dcgm_part
    assert '"namespace", "$1", "pod_namespace", "(.*)"' in memory
    engine = by_name["graphics_engine_active_p99"]
    assert "dcgm_fi_prof_gr_engine_active{" in engine and "dcgm_gpu_utilization{" in engine
    assert (
        "by (pod_namespace, pod_name, modelName, GPU_I_PROFILE, uuid, GPU_I_ID)"
        in (by_name[queries.GPUS])
    )
    # vLLM's series are scraped like any other: their pod labels are the default ones.
    assert 'exported_pod="",pod!=""' in by_name["kv_cache_usage_p95"]
    assert "pod_name" not in by_name["kv_cache_usage_p95"]
    for name in (queries.SAMPLES, queries.FIRST_STEP, queries.GPUS):
        assert "DCGM_FI_" not in by_name[name] and "exported_pod" not in by_name[name], name


def test_the_gmp_dialect_reads_dcgm_pods_from_exported_labels_and_vllm_from_target_labels() -> None:
    by_name = {q.name: q.promql for q in queries.sweep("7d", dialect=dialects.GMP)}
    for name in (queries.SAMPLES, queries.FIRST_STEP, queries.GPUS, "power_watts_max"):
        assert 'exported_pod!=""' in by_name[name], name
        assert 'exported_pod="",pod!=""' not in by_name[name], name
    for name in ("kv_cache_usage_p95", queries.PREEMPTIONS, "time_to_first_token_seconds_p99"):
        assert 'exported_pod="",pod!=""' in by_name[name], name
        assert 'exported_pod!=""' not in by_name[name], name


def test_an_unknown_dialect_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="dcgm, dcgm-old-namespace, gmp"):
        dialects.by_name("dcgm-new")


def test_every_field_of_the_profile_has_its_queries() -> None:
    names = [q.name for q in queries.sweep("7d")]
    assert len(names) == len(set(names))
    for signal in queries.SIGNALS:
        for statistic in queries.Statistic:
            assert f"{signal.field}_{statistic.value}" in names
    for histogram in queries.HISTOGRAMS:
        for figure in ("p50", "p95", "p99", "max"):
            assert f"{histogram.field}_{figure}" in names
    history = (queries.SAMPLES, queries.COVERED_STEPS, queries.FIRST_STEP, queries.LAST_STEP)
    for name in (*history, queries.GPUS):
        assert name in names
    assert queries.PREEMPTIONS in names and queries.CACHE_CONFIG in names
    assert queries.KV_CAPACITY in names and queries.SERVING_ENGINE in names
    # 7 gauges x 5 statistics, 2 histograms x 4, 5 history and identity queries, 2 vLLM, the
    # KV capacity of the engines that send it as gauges and the serving engine.
    assert len(names) == 7 * 5 + 2 * 4 + 5 + 2 + 2 == 52


def test_the_query_count_does_not_grow_with_namespaces_or_workloads() -> None:
    one = queries.sweep("7d", namespaces=["ml"])
    thousand = queries.sweep("7d", namespaces=[f"team-{i}" for i in range(1000)])
    unfiltered = queries.sweep("7d")
    assert [q.name for q in one] == [q.name for q in thousand] == [q.name for q in unfiltered]


def test_queries_aggregate_by_pod_and_read_both_label_layouts() -> None:
    for query in queries.sweep("7d"):
        assert "by (namespace, pod" in query.promql, query.name
        assert 'exported_pod!=""' in query.promql, query.name
        assert 'exported_pod="",pod!=""' in query.promql, query.name
        assert '"pod", "$1", "exported_pod", "(.*)"' in query.promql, query.name
        assert query.promql.count("(") == query.promql.count(")"), query.name
        assert "\n" not in query.promql


def test_units_and_windows_are_rendered() -> None:
    by_name = {q.name: q.promql for q in queries.sweep("1h30m", resolution="1m")}
    assert "quantile_over_time(0.95, DCGM_FI_DEV_FB_USED{" in by_name["memory_used_bytes_p95"]
    assert "[1h30m]) * 1048576" in by_name["memory_used_bytes_p95"]
    assert "/ 100" in by_name["graphics_engine_active_p50"]  # the GPU_UTIL fallback, in percent
    assert "vllm:gpu_cache_usage_perc" in by_name["kv_cache_usage_max"]
    for name in (queries.COVERED_STEPS, queries.LAST_STEP):
        assert "[1h30m:1m]" in by_name[name]
    # The first step is looked for one step before the window (history older than it); the
    # time of a grouped vector is the step's.
    assert "[1h31m:1m]" in by_name[queries.FIRST_STEP]
    assert "min_over_time(timestamp(group by (namespace, pod) ({" in by_name[queries.FIRST_STEP]
    assert by_name["samples"].count("count_over_time(DCGM_FI_DEV_FB_USED{") == 2
    tpot = by_name["time_per_output_token_seconds_p99"]
    assert tpot.startswith("histogram_quantile(0.99, sum by (namespace, pod, le) (")
    assert "increase(vllm:inter_token_latency_seconds_bucket{" in tpot
    assert "[1h30m]) or increase(vllm:time_per_output_token_seconds_bucket{" in tpot
    assert by_name["time_to_first_token_seconds_max"].startswith("histogram_quantile(1, ")


def test_the_resolution_never_exceeds_the_window() -> None:
    by_name = {q.name: q.promql for q in queries.sweep("90s")}
    assert "[90s:1m30s]" in by_name[queries.COVERED_STEPS]
    assert queries.grid("90s") == queries.Grid(90.0, 90.0)
    assert queries.grid("90s").steps == 1
    assert queries.grid("7d", "10m").steps == 1008


def test_history_reads_any_dcgm_series_of_a_gpu() -> None:
    # A MIG slice on some drivers has engine activity but no DCGM_FI_DEV_FB_* series.
    by_name = {q.name: q.promql for q in queries.sweep("7d")}
    for name in (queries.SAMPLES, queries.COVERED_STEPS, queries.GPUS):
        promql = by_name[name]
        for metric in queries.OBSERVED_METRICS:
            assert promql.count(f"{metric}{{") == 2, (name, metric)  # both label layouts
        assert "__name__" not in promql  # a name regex collides once the name is dropped
    names = "|".join(queries.OBSERVED_METRICS)
    for name in (queries.FIRST_STEP, queries.LAST_STEP):
        # Grouped by pod first, which drops the name: there a name regex is safe.
        promql = by_name[name]
        assert (
            promql.count(f'group by (exported_namespace, exported_pod) ({{__name__=~"{names}",')
            == 1
        )
        assert promql.count(f'group by (namespace, pod) ({{__name__=~"{names}",') == 1
    assert "FB_USED" not in by_name["graphics_engine_active_p95"]


def test_the_cache_config_is_read_per_pod_with_its_labels_and_never_by_model() -> None:
    promql = next(q.promql for q in queries.sweep("7d") if q.name == queries.CACHE_CONFIG)
    assert promql.startswith(
        "max by (namespace, pod, num_gpu_blocks, block_size, gpu_memory_utilization) ("
    )
    assert "last_over_time(vllm:cache_config_info{" in promql
    assert "model_name" not in promql


@pytest.mark.parametrize("window", ["", "7", "7days", "0s", "-1d", "1h 30m"])
def test_a_bad_window_is_a_value_error(window: str) -> None:
    with pytest.raises(ValueError, match=r"window|duration"):
        queries.sweep(window)


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("ml", "ml"),
        ('say "hi"', 'say \\"hi\\"'),
        ("back\\slash", "back\\\\slash"),
        ("two\nlines", "two\\nlines"),
        ("tab\there\r", "tab\\there\\r"),
        ("bell\x07", "bell\\x07"),
        ('"} or vector(1) #', '\\"} or vector(1) #'),
        ("ünïcode", "ünïcode"),
    ],
)
def test_escape_label_value(raw: str, escaped: str) -> None:
    assert queries.escape_label_value(raw) == escaped


@hypothesis.given(st.text())
def test_escaped_values_read_back_as_themselves(raw: str) -> None:
    escaped = queries.escape_label_value(raw)
    # PromQL's double-quoted strings use Go's escapes, which Python's agree with for these.
    assert ast.literal_eval(f'"{escaped}"') == raw
    assert re.search(r'(?<!\\)(\\\\)*"', escaped) is None  # no unescaped quote ends the string
    assert "\n" not in escaped


@hypothesis.given(st.text())
def test_regex_escaping_matches_the_value_literally(raw: str) -> None:
    assert re.fullmatch(queries.escape_regex(raw), raw, flags=re.DOTALL)


def test_namespace_filter_is_escaped_and_anchored_by_promql() -> None:
    sweep = queries.sweep("7d", namespaces=["ml", "a.b", 'x"y'])
    samples = next(q.promql for q in sweep if q.name == queries.SAMPLES)
    assert 'exported_namespace=~"a\\\\.b|ml|x\\"y"' in samples
    assert 'namespace=~"a\\\\.b|ml|x\\"y"' in samples


def test_cluster_matchers_reach_every_selector_of_the_sweep() -> None:
    plain = queries.sweep("7d", namespaces=["ml"])
    scoped = queries.sweep("7d", namespaces=["ml"], matchers={"cluster": 'eu-"1"'})
    assert len(scoped) == len(plain)
    for before, after in zip(plain, scoped, strict=True):
        selectors = before.promql.count('exported_pod!=""') + before.promql.count(
            'exported_pod="",pod!=""'
        )
        assert selectors > 0
        assert after.promql.count('cluster="eu-\\"1\\""') == selectors, before.name
        assert after.promql.replace(',cluster="eu-\\"1\\""', "") == before.promql
    with pytest.raises(ValueError, match="not a Prometheus label name"):
        queries.sweep("7d", matchers={"bad-label": "x"})
