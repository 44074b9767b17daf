"""`python -m resnext.info +recipe=NAME [overrides]`: the model's params and GFLOPs beside the paper's."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from .compose import compose_config
from .errors import ConfigError, reports_user_errors
from .models import build_model
from .models import describe as model_name
from .models.complexity import Complexity, measure


def describe(cfg: DictConfig) -> tuple[Complexity, list[str]]:
    """Complexity of the configured model and the lines comparing it with the recipe's paper block."""
    model_cfg = dict(cfg.model)
    model_cfg["num_classes"] = model_cfg["num_classes"] or 1000
    size = cfg.data.image_size
    try:
        cx = measure(lambda: build_model(model_cfg), size)
        shape = model_name(model_cfg)
    except ValueError as e:
        raise ConfigError(f"model.{e}") from None
    p = cfg.paper
    lines = [f"recipe   {cfg.name}  ({shape}, {model_cfg['num_classes']} classes, {size}x{size} input)"]
    if p.table:
        lines.append(f"paper    {p.table}: {p.row}")

    def row(label: str, ours: float, paper, unit: str) -> str:
        if paper is None:
            return f"{label:<8} {ours:9.3f}{unit}   paper: -"
        return f"{label:<8} {ours:9.3f}{unit}   paper: {paper}{unit}   difference {ours - paper:+.3f}{unit}"

    lines.append(row("params", cx.params / 1e6, p.params_m, "M") + f"   ({cx.params:,} exactly)")
    lines.append(row("GFLOPs", cx.gflops, p.gflops, "G") + "   (multiply-adds per image)")
    if p.top1_err is not None:
        top5 = "-" if p.top5_err is None else f"{p.top5_err}%"
        lines.append(f"target   top-1 error {p.top1_err}%, top-5 error {top5}")
    return cx, lines


@reports_user_errors
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return
    _, lines = describe(compose_config(argv))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
