"""The report's seed groups: runs that differ only by trainer.seed, summarised as mean, standard error and n."""

from __future__ import annotations

import json
import math
import os
import statistics

from .report_runs import SHORT, Run, flat_settings

SEED = "trainer.seed"


def mean_se(values: list[float]) -> tuple[float, float | None]:
    """The mean and its standard error (sample standard deviation / sqrt(n)); no error for one value."""
    m = statistics.fmean(values)
    return m, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None)


def seed_key(run: Run) -> str:
    """Everything a run learns from but its seed: runs with the same key are repeats of one experiment."""
    flat = flat_settings(run.cfg)
    flat.pop(SEED, None)
    return json.dumps([str(run.get("name")), flat], sort_keys=True)


def seed_groups(runs: list[Run]) -> list[list[int]]:
    """Indices of the runs, grouped by seed_key, for groups of at least two different seeds (in run order)."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(runs):
        groups.setdefault(seed_key(r), []).append(i)
    return [g for g in groups.values() if len({str(runs[i].get(SEED)) for i in g}) > 1]


def _label(members: list[Run], seeds: list[str]) -> str:
    """The members' label without the seed, then which seeds the row averages."""
    first = members[0]
    rest = ", ".join(f"{SHORT.get(k, k.split('.')[-1])}={v}" for k, v in first.differs.items() if k != SEED)
    base = f"{first.get('name')} ({rest})" if rest else str(first.get("name"))
    return f"{base} [mean of seeds {', '.join(seeds)}]"


def _same(values: list) -> object | None:
    """The value all members share, else None."""
    return values[0] if values and all(v == values[0] for v in values) else None


def group_row(members: list[Run], rows: list[dict]) -> dict:
    """One table row for a seed group: mean final errors with standard errors over the members that have
    one; the paper difference only when every member is finished; per-run columns (best epoch, wall time,
    throughput) left empty."""
    evaluated = [r for r in rows if r["final_top1"] is not None]
    finished = sum(r["status"] == "finished" for r in rows)
    row = {k: None for k in rows[0]}
    row.update({k: rows[0][k] for k in ("recipe", "model", "paper_table", "paper_row", "paper_top1",
                                        "paper_top5", "params_m", "gflops")})
    seeds = [r["seeds"] for r in rows]
    row.update(run=_label(members, seeds), path=os.path.commonpath([str(m.path) for m in members]),
               status="finished" if finished == len(rows) else f"{finished}/{len(rows)} finished",
               n=len(evaluated) or None, seeds=", ".join(seeds),
               epochs_done=_same([r["epochs_done"] for r in rows]),
               epochs_planned=_same([r["epochs_planned"] for r in rows]),
               world_size=_same([r["world_size"] for r in rows]), precision=_same([r["precision"] for r in rows]))
    for k in ("top1", "top5"):
        values = [r[f"final_{k}"] for r in evaluated if r[f"final_{k}"] is not None]
        if values:
            row[f"final_{k}"], row[f"final_{k}_se"] = mean_se(values)
        paper = row[f"paper_{k}"]
        if values and paper is not None and finished == len(rows) and len(values) == len(rows):
            row[f"diff_{k}"] = row[f"final_{k}"] - paper
    return row


def with_seed_groups(runs: list[Run], rows: list[dict]) -> list[dict]:
    """The table's rows: every run's, and each seed group's row right after its last member's."""
    after: dict[int, list[dict]] = {}
    for g in seed_groups(runs):
        after.setdefault(g[-1], []).append(group_row([runs[i] for i in g], [rows[i] for i in g]))
    return [r for i, row in enumerate(rows) for r in (row, *after.get(i, []))]
