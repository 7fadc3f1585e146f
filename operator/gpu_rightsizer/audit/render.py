"""The audit in each output format: table, JSON, CSV, Markdown and one self-contained HTML file.

JSON is the whole report (``kind: FleetReport``); CSV is one line per workload with the same
columns as the JSON ``workloads``, so its columns add up to the JSON ``totals``. The HTML file
needs nothing at view time: its styles are inline, and its four charts (savings by group,
current vs recommended GPU mix, the distribution of engine activity, idle allocations) are
SVG drawn here; each chart is ``<svg class="chart" data-chart=... data-series=N>`` with one
``<g class="series">`` per series. The only script sorts the workload table by a column.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import json
from collections.abc import Callable, Sequence
from typing import Any

from gpu_rightsizer.audit import fleet, report as report_

FORMATS = ("table", "json", "csv", "markdown", "html")

_COLUMNS: tuple[tuple[str, str], ...] = (
    ("cluster", "cluster"),
    ("namespace", "namespace"),
    ("name", "name"),
    ("group", "group"),
    ("state", "state"),
    ("current", "current"),
    ("recommended", "recommended"),
    ("replicas", "replicas"),
    ("gpusCurrent", "gpus_current"),
    ("gpusRecommended", "gpus_recommended"),
    ("monthlyCostCurrent", "monthly_cost_current"),
    ("monthlyCostRecommended", "monthly_cost_recommended"),
    ("monthlySavings", "monthly_savings"),
    ("gpuHoursSavedPerMonth", "gpu_hours_saved_per_month"),
    ("energyKWhSavedPerMonth", "energy_kwh_saved_per_month"),
    ("co2KgSavedPerMonth", "co2_kg_saved_per_month"),
    ("confidence", "confidence"),
    ("activityP95", "activity_p95"),
    ("observedDays", "observed_days"),
    ("idle", "idle"),
)
TOTAL_FIELDS: tuple[tuple[str, str], ...] = (
    ("workloads", "workloads"),
    ("recommended", "recommended"),
    ("idle", "idle"),
    ("gpusCurrent", "gpus_current"),
    ("gpusRecommended", "gpus_recommended"),
    ("monthlyCostCurrent", "monthly_cost_current"),
    ("monthlyCostRecommended", "monthly_cost_recommended"),
    ("monthlySavings", "monthly_savings"),
    ("gpuHoursSavedPerMonth", "gpu_hours_saved_per_month"),
    ("energyKWhSavedPerMonth", "energy_kwh_saved_per_month"),
    ("co2KgSavedPerMonth", "co2_kg_saved_per_month"),
    ("idleMonthlyCost", "idle_monthly_cost"),
)


def _row(r: fleet.Row) -> dict[str, Any]:
    return {key: getattr(r, field) for key, field in _COLUMNS}


def _totals(t: fleet.Totals) -> dict[str, Any]:
    return {key: getattr(t, field) for key, field in TOTAL_FIELDS}


def as_dict(r: report_.Report) -> dict[str, Any]:
    """The report as JSON-ready data (camelCase keys, units in the names)."""
    c = r.consolidation
    return {
        "apiVersion": "gpu-rightsizer.dev/v1alpha1",
        "kind": "FleetReport",
        "generated": r.generated,
        "source": r.source,
        "clusters": list(r.clusters),
        "currency": r.currency,
        "settings": {
            "groupBy": r.settings.group_by,
            "idleDays": r.settings.idle_days,
            "idleActivity": r.settings.idle_activity,
            "maxSharedActivity": r.settings.max_shared_activity,
        },
        "totals": _totals(r.totals),
        "groups": [{"group": g.key, **_totals(g.totals)} for g in r.groups],
        "idle": [_row(x) for x in r.idle],
        "workloads": [_row(x) for x in r.rows],
        "consolidation": None
        if c is None
        else {
            "algorithm": c.algorithm,
            "note": c.note,
            "gpusFreed": c.gpus_freed,
            "nodesFreed": c.nodes_freed,
            "capexAvoided": c.capex_avoided,
            "unplaced": list(c.unplaced),
            "models": [
                {
                    "gpuModel": m.gpu_model,
                    "nodes": m.nodes,
                    "gpusTotal": m.gpus_total,
                    "gpusNeeded": m.gpus_needed,
                    "gpusFreed": m.gpus_freed,
                    "nodesFreed": m.nodes_freed,
                    "lowerBoundGpus": m.lower_bound_gpus,
                    "purchasePricePerGpu": m.purchase_price_per_gpu,
                    "capexAvoided": m.capex_avoided,
                }
                for m in c.models
            ],
        },
        "sharing": [
            {
                "gpuModel": s.gpu_model,
                "members": [f"{m.workload}#{m.replica}" for m in s.members],
                "memoryNeedBytes": s.memory_need_bytes,
                "usableMemoryBytes": s.usable_memory_bytes,
                "activity": s.activity,
                "gpusFreed": s.gpus_freed,
                "proof": s.proof,
            }
            for s in r.sharing
        ],
        "whatIf": [
            {
                "gpuModel": w.gpu_model,
                "monthlyCost": w.monthly_cost,
                "monthlySavings": w.monthly_savings,
                "gpusNeeded": w.gpus_needed,
                "workloadsOnModel": w.workloads_on_model,
            }
            for w in r.what_if
        ],
    }


def to_json(r: report_.Report) -> str:
    return json.dumps(as_dict(r), indent=2, ensure_ascii=False) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}" if abs(value) < 1e15 else repr(value)
    return str(value)


def to_csv(r: report_.Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([key for key, _ in _COLUMNS])
    for row in r.rows:
        writer.writerow([_cell(v) for v in _row(row).values()])
    return out.getvalue()


# --- text ------------------------------------------------------------------------------------


def _money(value: float, currency: str) -> str:
    return f"{value:,.0f} {currency}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _grid(headers: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in body]
    return lines


def _markdown_table(headers: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(headers), line(["---"] * len(headers)), *(line(r) for r in body)]


def _workload_cells(r: report_.Report, row: fleet.Row) -> list[str]:
    name = f"{row.namespace}/{row.name}"
    if r.multi_cluster:
        name = f"{row.cluster}/{name}"
    return [
        ("IDLE " if row.idle else "") + name,
        row.current,
        row.recommended,
        row.state,
        _money(row.monthly_cost_current, r.currency),
        _money(row.monthly_savings, r.currency),
        f"{row.gpu_hours_saved_per_month:g}",
        f"{row.energy_kwh_saved_per_month:g}",
        f"{row.co2_kg_saved_per_month:g}",
        _pct(row.confidence),
        _pct(row.activity_p95),
    ]


_WORKLOAD_HEADERS = (
    "WORKLOAD",
    "CURRENT",
    "RECOMMENDED",
    "STATE",
    "COST/MONTH",
    "SAVINGS/MONTH",
    "GPU-H SAVED",
    "KWH SAVED",
    "KG CO2 SAVED",
    "CONFIDENCE",
    "ACTIVITY P95",
)


def _sections(
    r: report_.Report, table: Callable[[Sequence[str], Sequence[Sequence[str]]], list[str]]
) -> list[tuple[str, list[str]]]:
    t = r.totals
    summary = [
        f"{t.workloads} workloads ({t.recommended} with a recommendation, {t.idle} idle) "
        f"in {', '.join(r.clusters)}; figures from {r.source}.",
        f"Now {_money(t.monthly_cost_current, r.currency)} a month on {t.gpus_current:g} GPUs; "
        f"recommended {_money(t.monthly_cost_recommended, r.currency)} on "
        f"{t.gpus_recommended:g} GPUs: {_money(t.monthly_savings, r.currency)} a month saved, "
        f"{t.gpu_hours_saved_per_month:g} GPU-hours, {t.energy_kwh_saved_per_month:g} kWh, "
        f"{t.co2_kg_saved_per_month:g} kg CO2.",
    ]
    out: list[tuple[str, list[str]]] = [("Summary", summary)]
    idle = r.idle
    out.append(
        (
            f"Idle allocations (engine activity p99 <= {r.settings.idle_activity:.0%} "
            f"for {r.settings.idle_days:g}+ days)",
            [
                *table(
                    ["WORKLOAD", "CURRENT", "COST/MONTH", "OBSERVED DAYS"],
                    [
                        [
                            f"{x.namespace}/{x.name}",
                            x.current,
                            _money(x.monthly_cost_current, r.currency),
                            f"{x.observed_days:g}" if x.observed_days is not None else "-",
                        ]
                        for x in idle
                    ],
                ),
                f"Idle cost: {_money(t.idle_monthly_cost, r.currency)} a month.",
            ]
            if idle
            else ["None."],
        )
    )
    out.append(
        (
            f"By {r.settings.group_by}",
            table(
                ["GROUP", "WORKLOADS", "GPUS NOW", "GPUS RECOMMENDED", "COST/MONTH", "SAVINGS"],
                [
                    [
                        g.key,
                        str(g.totals.workloads),
                        f"{g.totals.gpus_current:g}",
                        f"{g.totals.gpus_recommended:g}",
                        _money(g.totals.monthly_cost_current, r.currency),
                        _money(g.totals.monthly_savings, r.currency),
                    ]
                    for g in r.groups
                ],
            ),
        )
    )
    out.append(("Workloads", table(_WORKLOAD_HEADERS, [_workload_cells(r, x) for x in r.rows])))
    c = r.consolidation
    if c is not None:
        lines = table(
            ["GPU MODEL", "NODES", "GPUS", "NEEDED (LOWER BOUND)", "FREED", "NODES FREED", "CAPEX"],
            [
                [
                    m.gpu_model,
                    str(m.nodes),
                    str(m.gpus_total),
                    f"{m.gpus_needed} ({m.lower_bound_gpus})",
                    str(m.gpus_freed),
                    str(m.nodes_freed),
                    "-" if m.capex_avoided is None else _money(m.capex_avoided, r.currency),
                ]
                for m in c.models
            ],
        )
        lines.append(
            f"{c.gpus_freed} GPUs and {c.nodes_freed} nodes freed ({c.algorithm}). {c.note}".strip()
        )
        lines += [f"Not placed: {u}" for u in c.unplaced]
        out.append(("Consolidation", lines))
    out.append(
        (
            "Sharing (time-slicing or MPS)",
            [
                f"{s.gpu_model}: {', '.join(f'{m.workload}#{m.replica}' for m in s.members)}: "
                f"{s.proof}"
                for s in r.sharing
            ]
            or ["No replicas small enough to share a GPU."],
        )
    )
    if r.what_if:
        out.append(
            (
                "What if",
                table(
                    ["GPU MODEL", "COST/MONTH", "SAVINGS/MONTH", "GPUS NEEDED", "WORKLOADS"],
                    [
                        [
                            w.gpu_model,
                            _money(w.monthly_cost, r.currency),
                            _money(w.monthly_savings, r.currency),
                            f"{w.gpus_needed:g}",
                            str(w.workloads_on_model),
                        ]
                        for w in r.what_if
                    ],
                ),
            )
        )
    return out


def to_table(r: report_.Report) -> str:
    lines: list[str] = []
    for title, body in _sections(r, _grid):
        lines += [title.upper(), *body, ""]
    return "\n".join(lines).rstrip() + "\n"


def to_markdown(r: report_.Report) -> str:
    lines = [f"# GPU fleet report ({r.generated})", ""]
    for title, body in _sections(r, _markdown_table):
        lines += [f"## {title}", "", *body, ""]
    return "\n".join(lines).rstrip() + "\n"


# --- HTML -----------------------------------------------------------------------------------

_PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)


@dataclasses.dataclass(frozen=True)
class _Series:
    name: str
    values: tuple[float, ...]


def _axis(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _bars(
    chart: str, title: str, labels: Sequence[str], series: Sequence[_Series], unit: str
) -> str:
    """A grouped bar chart: one ``<g class="series">`` per series, one bar per label."""
    width, height, left, bottom, top = 760, 300, 70, 60, 30
    plot_w, plot_h = width - left - 20, height - top - bottom
    peak = max([v for s in series for v in s.values] + [0.0]) or 1.0
    n = max(len(labels), 1)
    slot = plot_w / n
    bar = slot * 0.8 / max(len(series), 1)
    parts = [
        f'<svg class="chart" data-chart="{chart}" data-series="{len(series)}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="18" class="title">{html.escape(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#888"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" class="axis">'
        f"{_axis(peak)} {html.escape(unit)}</text>",
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" class="axis">0</text>',
    ]
    for i, label in enumerate(labels):
        x = left + slot * i + slot / 2
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle" class="axis">'
            f"{html.escape(label[:18])}</text>"
        )
    for k, s in enumerate(series):
        color = _PALETTE[k % len(_PALETTE)]
        parts.append(f'<g class="series" data-name="{html.escape(s.name)}" fill="{color}">')
        for i, value in enumerate(s.values):
            h = plot_h * max(value, 0.0) / peak
            x = left + slot * i + slot * 0.1 + bar * k
            parts.append(
                f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}"><title>{html.escape(s.name)} {html.escape(labels[i])}: '
                f"{value:,.4g} {html.escape(unit)}</title></rect>"
            )
        parts.append("</g>")
        parts.append(
            f'<rect x="{left + 10 + 150 * k}" y="{height - 22}" width="12" height="12" '
            f'fill="{color}"/><text x="{left + 26 + 150 * k}" y="{height - 12}" class="axis">'
            f"{html.escape(s.name)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _charts(r: report_.Report) -> list[str]:
    groups = list(r.groups)
    mix = fleet.gpu_mix(r.rows)
    histogram = fleet.activity_histogram(r.rows)
    idle = r.idle
    return [
        _bars(
            "savings-by-group",
            f"Cost per month by {r.settings.group_by}",
            [g.key for g in groups],
            [
                _Series("now", tuple(g.totals.monthly_cost_current for g in groups)),
                _Series("recommended", tuple(g.totals.monthly_cost_recommended for g in groups)),
            ],
            r.currency,
        ),
        _bars(
            "gpu-mix",
            "GPUs by model: now and recommended",
            list(mix),
            [
                _Series("now", tuple(v[0] for v in mix.values())),
                _Series("recommended", tuple(v[1] for v in mix.values())),
            ],
            "GPUs",
        ),
        _bars(
            "activity",
            "Workloads by engine activity (p95)",
            [f"{10 * i}-{10 * (i + 1)}%" for i in range(len(histogram))],
            [_Series("workloads", tuple(float(c) for c in histogram))],
            "workloads",
        ),
        _bars(
            "idle",
            "Idle allocations: cost per month",
            [f"{x.namespace}/{x.name}" for x in idle] or ["none"],
            [_Series("idle", tuple(x.monthly_cost_current for x in idle) or (0.0,))],
            r.currency,
        ),
    ]


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;font-size:13px}th,td{padding:4px 8px;border-bottom:1px solid #ddd;
text-align:left}th{cursor:pointer;background:#f4f4f4}td.num{text-align:right}
tr.idle td{background:#fff4e5}.charts{display:flex;flex-wrap:wrap;gap:16px}
svg.chart{border:1px solid #eee;background:#fff}svg .title{font-size:14px;font-weight:600}
svg .axis{font-size:10px;fill:#555}.kpi{display:flex;gap:24px}.kpi div{background:#f6f8fa;
padding:10px 14px;border-radius:6px}.kpi b{display:block;font-size:20px}
"""

_SORT = """
document.querySelectorAll("table.sortable th").forEach(function (th, index) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var down = th.dataset.down !== "true";
    th.dataset.down = down;
    rows.sort(function (a, b) {
      var x = a.cells[index].dataset.v || a.cells[index].textContent;
      var y = b.cells[index].dataset.v || b.cells[index].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny;
      return down ? -c : c;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""


def _html_table(headers: Sequence[str], body: Sequence[Sequence[str]], *, cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def to_html(r: report_.Report) -> str:
    t = r.totals
    kpis = [
        ("Savings a month", _money(t.monthly_savings, r.currency)),
        ("Cost a month now", _money(t.monthly_cost_current, r.currency)),
        ("GPUs now / recommended", f"{t.gpus_current:g} / {t.gpus_recommended:g}"),
        ("Idle allocations", f"{t.idle} ({_money(t.idle_monthly_cost, r.currency)})"),
        ("CO2 saved a month", f"{t.co2_kg_saved_per_month:g} kg"),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>GPU fleet report {html.escape(r.generated)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>GPU fleet report</h1><p>{html.escape(', '.join(r.clusters))} · generated "
        f"{html.escape(r.generated)} · from {html.escape(r.source)}</p>",
        '<div class="kpi">'
        + "".join(f"<div>{html.escape(k)}<b>{html.escape(v)}</b></div>" for k, v in kpis)
        + "</div>",
        '<h2>Charts</h2><div class="charts">' + "".join(_charts(r)) + "</div>",
    ]
    for title, body in _sections(r, lambda h, b: [_html_table(h, b)]):
        if title == "Workloads":
            rows = "".join(
                f'<tr class="{"idle" if x.idle else ""}">'
                + "".join(f"<td>{html.escape(c)}</td>" for c in _workload_cells(r, x))
                + "</tr>"
                for x in r.rows
            )
            head = "".join(f"<th>{html.escape(h)}</th>" for h in _WORKLOAD_HEADERS)
            table = (
                f'<table class="sortable" id="workloads"><thead><tr>{head}</tr></thead>'
                f"<tbody>{rows}</tbody></table>"
            )
            parts.append(f"<h2>{html.escape(title)}</h2>{table}")
            continue
        rendered = "".join(
            line if line.startswith("<table") else f"<p>{html.escape(line)}</p>" for line in body
        )
        parts.append(f"<h2>{html.escape(title)}</h2>{rendered}")
    parts.append(f"<script>{_SORT}</script></body></html>")
    return "\n".join(parts) + "\n"


def render(r: report_.Report, fmt: str) -> str:
    renderers: dict[str, Callable[[report_.Report], str]] = {
        "table": to_table,
        "json": to_json,
        "csv": to_csv,
        "markdown": to_markdown,
        "html": to_html,
    }
    if fmt not in renderers:
        raise ValueError(f"unknown output format {fmt!r}: use one of {', '.join(FORMATS)}")
    return renderers[fmt](r)
