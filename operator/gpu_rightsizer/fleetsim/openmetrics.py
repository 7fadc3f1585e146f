"""History as OpenMetrics text, for ``promtool tsdb create-blocks-from openmetrics``.

What promtool needs and this writes: one ``# TYPE`` (and ``# HELP``) line per metric family, all
of a family's samples together (a family never reappears), each sample with a timestamp in
seconds, the samples of one series in time order, and ``# EOF`` at the end. A histogram is one
family of type ``histogram`` whose series are its ``_bucket`` (with ``le``), ``_sum`` and
``_count`` counters. A NaN value is no sample (a series that did not exist then) and is left out.

The series are computed with numpy for the whole window, then written family by family, series
by series, straight to the file; memory is about 8 bytes per sample (a week at 60 s for a dozen
workloads is a few tens of MB), the file about 250 bytes per sample.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time
from collections.abc import Iterable
from typing import TextIO

import numpy as np

from gpu_rightsizer.fleetsim import series

# OpenMetrics wants counter samples named <family>_total. dcgm-exporter's energy counter is not;
# OpenMetrics' `unknown` type keeps its real name, and the TSDB stores no type either way.
_OPENMETRICS_KIND = {series.TOTAL_ENERGY.name: "unknown"}


@dataclasses.dataclass(frozen=True)
class HistoryStats:
    """What a history file holds and how long it took to make."""

    path: pathlib.Path
    start: float
    end: float
    step_seconds: float
    series: int
    samples: int
    bytes: int
    seconds: float


def escape(value: str) -> str:
    """A label value as the text formats quote it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def label_text(labels: series.Labels) -> str:
    return ",".join(f'{name}="{escape(value)}"' for name, value in labels)


def format_values(decimals: int | None, values: series.FloatArray) -> list[str]:
    """Sample values as text: integers for counts, MiB, percent and mJ (``decimals`` None);
    values rounded to ``decimals`` else. The values must be finite."""
    if decimals is None:
        return [str(v) for v in values.astype(np.int64).tolist()]
    return [repr(v) for v in np.round(values, decimals).tolist()]


def timestamps(start: float, end: float, step_seconds: float) -> series.FloatArray:
    """Sample times from ``start`` to ``end`` inclusive, on multiples of the step."""
    first = math.ceil(start / step_seconds) * step_seconds
    count = math.floor((end - first) / step_seconds) + 1
    return first + step_seconds * np.arange(max(count, 0), dtype=np.float64)


def write_families(
    out: TextIO,
    by_family: dict[str, list[series.Series]],
    times: series.FloatArray,
    families: Iterable[series.Family] = series.FAMILIES,
) -> tuple[int, int]:
    """Write families of series to ``out``; returns (series, samples) written."""
    if np.all(times == np.round(times)):
        stamps = [str(t) for t in times.astype(np.int64).tolist()]
    else:
        stamps = [f"{t:.3f}" for t in times.tolist()]
    count_series = 0
    count_samples = 0
    for family in families:
        members = by_family.get(family.name, [])
        if not members:
            continue
        kind = _OPENMETRICS_KIND.get(family.name, family.kind)
        out.write(f"# HELP {family.name} {family.help}\n# TYPE {family.name} {kind}\n")
        for member in members:
            prefix = f"{member.sample_name}{{{label_text(member.labels)}}} "
            present = np.isfinite(member.values)
            if present.all():
                values, at = format_values(member.decimals, member.values), stamps
            else:
                values = format_values(member.decimals, member.values[present])
                at = [stamp for stamp, keep in zip(stamps, present.tolist(), strict=True) if keep]
            out.write("".join([f"{prefix}{v} {t}\n" for v, t in zip(values, at, strict=True)]))
            count_series += 1
            count_samples += len(values)
    return count_series, count_samples


def write_history(
    simulator: series.Simulator,
    path: pathlib.Path,
    *,
    start: float,
    end: float,
    step_seconds: float,
) -> HistoryStats:
    """Write every series of the fleet from ``start`` to ``end`` to an OpenMetrics file."""
    began = time.perf_counter()
    times = timestamps(start, end, step_seconds)
    by_family = simulator.series(times)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as out:
        n_series, n_samples = write_families(out, by_family, times)
        out.write("# EOF\n")
    return HistoryStats(
        path=path,
        start=float(times[0]) if times.size else start,
        end=float(times[-1]) if times.size else end,
        step_seconds=step_seconds,
        series=n_series,
        samples=n_samples,
        bytes=path.stat().st_size,
        seconds=time.perf_counter() - began,
    )
