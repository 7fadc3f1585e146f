"""Output formats of ``recommend`` and ``catalog``: table (for people), JSON and YAML."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import yaml

from gpu_rightsizer.models import crd, gpus
from gpu_rightsizer.recommend import statuses

FORMATS = ("table", "json", "yaml")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def dump(data: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip()


def recommendations_table(results: Sequence[tuple[str, str, crd.GPUWorkloadStatus]]) -> str:
    """One row per workload, then each workload's reasons and savings assumptions."""
    rows = []
    for namespace, name, status in results:
        ready = next((c for c in status.conditions if c.type == statuses.READY), None)
        summary = status.summary or crd.Summary()
        rec = status.recommendation
        savings = status.savings
        rows.append(
            [
                f"{namespace}/{name}",
                summary.current or "-",
                summary.recommended or "-",
                summary.monthly_savings or "-",
                f"{savings.percent:.0f}%" if savings else "-",
                f"{savings.gpu_hours_per_month:,.0f}" if savings else "-",
                f"{savings.energy_kwh_per_month:,.0f}" if savings else "-",
                f"{savings.co2_kg_per_month:,.0f}" if savings else "-",
                f"{rec.confidence:.2f}" if rec else "-",
                ready.reason if ready else "-",
            ]
        )
    out = [
        _table(
            [
                "WORKLOAD",
                "CURRENT",
                "RECOMMENDED",
                "SAVINGS/MO",
                "SAVED",
                "GPU-H/MO",
                "KWH/MO",
                "CO2 KG/MO",
                "CONFIDENCE",
                "STATUS",
            ],
            rows,
        )
    ]
    for namespace, name, status in results:
        out.append("")
        out.append(f"{namespace}/{name}:")
        ready = next((c for c in status.conditions if c.type == statuses.READY), None)
        if status.recommendation is None:
            out.append(f"  {ready.message if ready else 'no recommendation'}")
            continue
        out.extend(f"  - {reason}" for reason in status.recommendation.reasons)
        for alt in status.alternatives:
            out.append(f"  alternative: {alt.describe()} at {alt.hourly_cost:.2f}/h per replica")
        if status.savings is not None:
            out.append(f"  assumptions: {'; '.join(status.savings.assumptions)}")
    return "\n".join(out)


def catalog_table(catalog: gpus.Catalog) -> str:
    rows = [
        [
            g.id,
            str(g.architecture),
            f"{g.memory_gib:g}",
            f"{g.usable_memory_mib / 1024:.2f}",
            f"{g.sm_count}" if g.sm_count else "-",
            f"{g.memory_bandwidth_gb_per_s:,.0f}",
            f"{g.tdp_watts:g}",
            f"{g.bf16_dense_tflops:g}",
            ",".join(str(p) for p in g.native_precisions),
            ",".join(p.name for p in g.mig_profiles) or "-",
            f"{g.price.per_gpu_hour:.2f}",
            g.price.date,
        ]
        for g in catalog.gpus
    ]
    header = _table(
        [
            "GPU",
            "ARCH",
            "MEM GB",
            "USABLE GIB",
            "SMS",
            "BW GB/S",
            "TDP W",
            "BF16 TFLOPS",
            "NATIVE",
            "MIG PROFILES",
            f"{catalog.currency}/GPU-H",
            "PRICE DATE",
        ],
        rows,
    )
    energy = catalog.energy
    footer = (
        f"\nPUE {energy.pue:g} ({energy.pue_source}); grid "
        f"{energy.grid_carbon_intensity_grams_per_kwh:g} gCO2/kWh "
        f"({energy.grid_carbon_intensity_source}); {catalog.hours_per_month:g} h/month; "
        f"MIG price: {catalog.mig_pricing}"
    )
    return header + "\n" + footer
