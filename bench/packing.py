"""How close consolidation's first-fit decreasing comes to the optimum, on random small fleets.

Generates seeded fleets (1 to 3 nodes of A100-80GB or H100-80GB, 1 to 8 GPUs each, some MIG-capable,
some GPUs pinned; up to 10 replicas of the fleet's GPU models, whole GPUs that fit a node or
MIG instances of every profile on MIG-capable models), packs each
with :func:`gpu_rightsizer.audit.packing.pack` and compares the GPUs it uses with the exact
minimum (:func:`~gpu_rightsizer.audit.packing.exact_min_gpus`). Fleets where some replica cannot
be placed at all are skipped. Writes the figures as JSON.

    .venv/bin/python bench/packing.py --fleets 500 --out bench/results/packing.json
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import pathlib
import random
import time

from gpu_rightsizer import catalogs
from gpu_rightsizer.audit import packing

MODELS = ("A100-80GB", "H100-80GB")


def fleet(rng: random.Random) -> tuple[list[packing.Demand], list[packing.Node]]:
    catalog = catalogs.default_catalog()
    nodes = [
        packing.Node(
            f"n{i}",
            rng.choice(MODELS),
            rng.choice([1, 2, 4, 8]),
            rng.random() < 0.7,
            rng.choice([0, 0, 0, 1]),
        )
        for i in range(rng.randint(1, 3))
    ]
    demands = []
    for i in range(rng.randint(1, 10)):
        node = rng.choice(nodes)  # replicas of the models the fleet has
        model = node.gpu_model
        gpu = catalog.get(model)
        assert gpu is not None
        if node.mig_capable and rng.random() < 0.6:
            profile = rng.choice(gpu.mig_profiles).name
            demands.append(packing.Demand(f"d{i}", model, 1, profile))
        else:
            size = rng.choice([g for g in (1, 1, 2, 4) if g <= node.gpus] or [1])
            demands.append(packing.Demand(f"d{i}", model, size))
    return demands, nodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fleets", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path("bench/results/packing.json")
    )
    args = parser.parse_args()
    catalog = catalogs.default_catalog()
    table = catalogs.mig_placements()
    rng = random.Random(args.seed)
    gaps: collections.Counter[int] = collections.Counter()
    skipped = 0
    started = time.perf_counter()
    for _ in range(args.fleets):
        demands, nodes = fleet(rng)
        packed = packing.pack(demands, nodes, catalog, table)
        best = packing.exact_min_gpus(demands, nodes, catalog, table)
        if best is None or packed.unplaced:
            skipped += 1
            continue
        gaps[sum(packed.gpus_used_by_model.values()) - best] += 1
    compared = sum(gaps.values())
    figures = {
        "benchmark": "packing",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "algorithm": packing.ALGORITHM,
        "fleets": args.fleets,
        "seed": args.seed,
        "compared": compared,
        "skipped_unplaceable": skipped,
        "optimal_share": round(gaps[0] / compared, 4) if compared else None,
        "gap_gpus_histogram": {str(k): v for k, v in sorted(gaps.items())},
        "max_gap_gpus": max(gaps) if gaps else None,
        "mean_gap_gpus": round(sum(k * v for k, v in gaps.items()) / compared, 4)
        if compared
        else None,
        "seconds": round(time.perf_counter() - started, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(
        f"{packing.ALGORITHM}: optimal on {gaps[0]} of {compared} fleets "
        f"({figures['optimal_share']:.1%}), at most {figures['max_gap_gpus']} GPU(s) more; "
        f"{skipped} skipped (a replica could not be placed) -> {args.out}"
    )


if __name__ == "__main__":
    main()
