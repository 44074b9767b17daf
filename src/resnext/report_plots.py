"""The report's figures: top-1 error per epoch (paper Fig. 5) and CIFAR error against parameters (Fig. 7)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SIZE = (9, 5.5)  # inches; at DPI pixels: 900 x 550
DPI = 100


def curves(runs, out: Path) -> bool:
    """Train (dashed) and val (solid) top-1 error vs epoch, one color per run. False if nothing to plot."""
    fig, ax = plt.subplots(figsize=SIZE, dpi=DPI)
    drawn = False
    for i, run in enumerate(runs):
        epochs = run.of("epoch")
        if not epochs:
            continue
        color = f"C{i % 10}"
        ax.plot([e["epoch"] + 1 for e in epochs], [e["train_top1_err"] for e in epochs], "--", color=color,
                label=f"{run.label} train")
        val = [e for e in epochs if e.get("val_top1_err") is not None]
        if val:
            ax.plot([e["epoch"] + 1 for e in val], [e["val_top1_err"] for e in val], "-", color=color,
                    label=f"{run.label} val")
        drawn = True
    if drawn:
        ax.set_xlabel("epochs")
        ax.set_ylabel("top-1 error (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return drawn


def families(runs, rows) -> dict[str, list[tuple[float, float]]]:
    """Fig. 7's curves: cardinality grows at a fixed d, or width grows at C = 1; (params M, best error)."""
    groups: dict[str, list[tuple[float, float, int, int]]] = defaultdict(list)
    for run, row in zip(runs, rows):
        m = run.cfg.model
        if run.cfg.data.dataset not in ("cifar10", "cifar100") or row["best_top1"] is None or row["params_m"] is None:
            continue
        point = (row["params_m"], row["best_top1"], m.cardinality, m.width)
        groups[f"{run.cfg.data.dataset}, ResNeXt-{m.depth}, d={m.width}, C varies"].append(point)
        if m.cardinality == 1:
            groups[f"{run.cfg.data.dataset}, ResNet-{m.depth} (C=1), width varies"].append(point)
    out = {}
    for name, pts in groups.items():
        varies = {p[2] for p in pts} if "C varies" in name else {p[3] for p in pts}
        if len(varies) >= 2:
            out[name] = sorted((p[0], p[1]) for p in pts)
    return out


def fig7(runs, rows, out: Path) -> bool:
    fams = families(runs, rows)
    if not fams:
        return False
    fig, ax = plt.subplots(figsize=SIZE, dpi=DPI)
    for name, pts in fams.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=name)
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel("test error (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return True
