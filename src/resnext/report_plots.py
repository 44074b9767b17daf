"""The report's figures: top-1 error per epoch (the paper's Fig. 5) and CIFAR error against parameters (Fig. 7)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .report_groups import mean_se  # noqa: E402
from .report_runs import Run, flat_settings  # noqa: E402

SIZE_PX = (900, 550)  # width, height of every figure in pixels
DPI = 100
CIFAR = ("cifar10", "cifar100")
LEGEND_LABEL = 60  # longest legend label (characters) before it is cut with "..."
LEGEND_INSIDE = 6  # legends with more entries go beside the axes
MARKERS_BELOW = 30  # runs with fewer epochs than this get point markers (a 1-epoch run is otherwise invisible)


def _figure():
    return plt.subplots(figsize=(SIZE_PX[0] / DPI, SIZE_PX[1] / DPI), dpi=DPI)


def _save(fig, out: Path) -> None:
    fig.savefig(out, dpi=DPI)  # no bbox_inches="tight": the size stays SIZE_PX
    plt.close(fig)


def _color(i: int, n: int):
    """The i-th of n distinct colors (tab10's first, as matplotlib's default cycle)."""
    if n <= 10:
        return plt.get_cmap("tab10")(i)
    if n <= 20:  # the dark half of tab20 first: neighbours in the legend stay easy to tell apart
        return plt.get_cmap("tab20")(2 * i if i < 10 else 2 * (i - 10) + 1)
    return plt.get_cmap("viridis")(i / (n - 1))


def _legend(fig, ax, entries: int) -> None:
    """Inside the axes for a few entries; for more, in a column right of narrowed axes (size unchanged)."""
    handles, labels = ax.get_legend_handles_labels()
    labels = [t if len(t) <= LEGEND_LABEL else t[:LEGEND_LABEL - 3] + "..." for t in labels]
    if entries <= LEGEND_INSIDE:
        ax.legend(handles, labels, loc="best", fontsize=8)
    else:
        fig.subplots_adjust(left=0.07, right=0.52)
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, borderaxespad=0)


def curves(runs: list[Run], rows: list[dict], out: Path) -> bool:
    """Val (solid) and train (dashed) top-1 error vs epoch, one color per run; False if no run has an epoch."""
    plotted = [r for r in runs if r.epochs()]
    if not plotted:
        return False
    fig, ax = _figure()
    for i, run in enumerate(plotted):
        epochs = run.epochs()
        color = _color(i, len(plotted))
        marker = "o" if len(epochs) < MARKERS_BELOW else None
        train = [e for e in epochs if e.get("train_top1_err") is not None]
        val = [e for e in epochs if e.get("val_top1_err") is not None]
        ax.plot([e["epoch"] + 1 for e in train], [e["train_top1_err"] for e in train], "--", color=color,
                marker=marker, markersize=3, linewidth=1.2)
        ax.plot([e["epoch"] + 1 for e in val], [e["val_top1_err"] for e in val], "-", color=color,
                marker=marker, markersize=3, linewidth=1.8, label=run.label)
    _legend(fig, ax, len(plotted))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epochs")
    ax.set_ylabel("top-1 error (%)")
    ax.set_title("top-1 error per epoch (as the paper's Fig. 5): solid val, dashed train", fontsize=10)
    ax.grid(alpha=0.3)
    _save(fig, out)
    return True


def _family_key(run: Run, varying: str) -> str:
    """Everything that must be shared within a family: all settings but ``varying`` and the seed."""
    flat = flat_settings(run.cfg)
    for key in (varying, "trainer.seed"):
        flat.pop(key, None)
    return json.dumps(flat, sort_keys=True)


def _family(m):
    """The run's model family (None for one this version does not know)."""
    from .models import family_of

    try:
        return family_of(str(m.get("arch")))
    except ValueError:
        return None


def families(runs: list[Run], rows: list[dict]) -> dict[str, list[tuple[float, float, Run]]]:
    """Fig. 7's curves from the CIFAR runs with a test error and a parameter count.

    A family is either runs sharing everything but model.cardinality ("width d=64, C varies"), or runs
    with cardinality 1 sharing everything but model.width ("C=1, width varies"); only families whose runs
    take at least two values are kept. Points are (params in M, final test top-1 error, run), by params.
    """
    groups: dict[tuple[str, str], list[tuple[float, float, Run]]] = {}
    names: dict[tuple[str, str], str] = {}
    for run, row in zip(runs, rows, strict=True):
        m = run.cfg.model
        family = _family(m)
        if (run.get("data.dataset") not in CIFAR or family is None or not {"cardinality", "width"} <= set(family.keys())
                or row["final_top1"] is None or row["params_m"] is None):
            continue
        point = (row["params_m"], row["final_top1"], run)
        net = f"{run.get('data.dataset')} {family.title}-{m.get('depth')}"
        for varying, name in (("model.cardinality", f"{net}: width d={m.get('width')}, C varies"),
                              ("model.width", f"{net}: C=1, width varies")):
            if varying == "model.width" and m.get("cardinality") != 1:
                continue
            key = (varying, _family_key(run, varying))
            groups.setdefault(key, []).append(point)
            names[key] = name
    out: dict[str, list[tuple[float, float, Run]]] = {}
    for key, points in groups.items():
        field = key[0].split(".")[1]
        if len({p[2].cfg.model.get(field) for p in points}) < 2:
            continue
        name, n = names[key], 2
        while name in out:  # the same label for families that differ elsewhere (epochs, lr, ...)
            name, n = f"{names[key]} #{n}", n + 1
        out[name] = sorted(points, key=lambda p: (p[0], p[1]))
    return out


def curve(points: list[tuple[float, float, Run]]) -> tuple[list[float], list[float], list[float]]:
    """A family's curve: at each parameter count (one model, its seeds repeating it) the mean error and its
    standard error (0 for a single run)."""
    by_x: dict[float, list[float]] = {}
    for x, y, _ in points:
        by_x.setdefault(x, []).append(y)
    xs = sorted(by_x)
    stats = [mean_se(by_x[x]) for x in xs]
    return xs, [m for m, _ in stats], [se or 0.0 for _, se in stats]


def fig7(runs: list[Run], rows: list[dict], out: Path) -> bool:
    """Test error vs parameters, one curve per family through the mean where seeds repeat a model, with
    standard-error bars there; hollow markers for runs not finished. False if the runs hold no CIFAR family."""
    fams = families(runs, rows)
    if not fams:
        return False
    status = {id(run): row["status"] for run, row in zip(runs, rows, strict=True)}
    fig, ax = _figure()
    for i, (name, points) in enumerate(fams.items()):
        color = _color(i, len(fams))
        xs, means, ses = curve(points)
        ax.errorbar(xs, means, yerr=ses, fmt="-", color=color, ecolor=color, elinewidth=1.5, capsize=4,
                    label=name)
        for x, y, run in points:
            done = status[id(run)] == "finished"
            ax.plot([x], [y], "o", color=color, markerfacecolor=color if done else "white", markersize=6)
            m = run.cfg.model
            ax.annotate(f"{m.get('cardinality')}x{m.get('width')}d", (x, y), textcoords="offset points",
                        xytext=(4, 4), fontsize=7, color=color)
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel("test top-1 error (%), final epoch")
    ax.set_title("CIFAR test error vs model size (as the paper's Fig. 7): mean over seeds, bars: standard error; "
                 "hollow: not finished", fontsize=9)
    ax.grid(alpha=0.3)
    _legend(fig, ax, len(fams))
    _save(fig, out)
    return True


#: Every figure the report draws: file name -> draw(runs, rows, path) returning whether it was drawn.
FIGURES: dict[str, Callable[[list[Run], list[dict], Path], bool]] = {"curves.png": curves, "fig7.png": fig7}
