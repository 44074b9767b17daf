"""`python -m resnext.info +recipe=NAME [overrides]`: the model's params and GFLOPs beside the paper's.

`python -m resnext.info --keys`: every configuration key with its default and its one-line meaning.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import sys
import textwrap
import tokenize

from omegaconf import DictConfig, OmegaConf

from .compose import compose_config
from .config import classes_before_data
from .data import normalization
from .errors import ConfigError, reports_user_errors
from .models import FAMILIES, build_model
from .models import describe as model_name
from .models.complexity import Complexity, measure


def describe(cfg: DictConfig) -> tuple[Complexity, list[str]]:
    """Complexity of the configured model and the lines comparing it with the recipe's paper block."""
    model_cfg = dict(cfg.model)
    model_cfg["num_classes"] = classes_before_data(model_cfg["num_classes"], cfg.data.dataset)
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
    mean, std = normalization(str(cfg.data.dataset))
    lines.append(f"input    {cfg.data.dataset}: mean {', '.join(f'{255 * v:.1f}' for v in mean)}, std "
                 f"{', '.join(f'{255 * v:.1f}' for v in std)} (RGB, 0-255 scale)")
    if p.top1_err is not None:
        top5 = "-" if p.top5_err is None else f"{p.top5_err}%"
        lines.append(f"target   top-1 error {p.top1_err}%, top-5 error {top5}")
    return cx, lines


def field_comments(cls: type) -> dict[str, str]:
    """The one-line comment after each field of a config dataclass (and of the dataclasses it extends)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        src = textwrap.dedent(inspect.getsource(klass))
        comments = {t.start[0]: t.string.lstrip("#").strip()
                    for t in tokenize.generate_tokens(io.StringIO(src).readline) if t.type == tokenize.COMMENT}
        for node in ast.parse(src).body[0].body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                comment = comments.get(node.end_lineno) or comments.get(node.lineno)
                if comment:
                    out[node.target.id] = comment
    return out


def _shown(node: DictConfig, key: str) -> str:
    """A default as the command line would write it; a derived one (an interpolation) as ``auto``."""
    if OmegaConf.is_interpolation(node, key):
        return "auto"
    value = OmegaConf.to_container(node, resolve=False)[key]
    return "???" if value == "???" else "null" if value is None else str(value).lower() if isinstance(
        value, bool) else str(value)


def _rows(node: DictConfig, cls: type, prefix: str) -> list[tuple[str, str, str]]:
    comments = field_comments(cls)
    return [(f"{prefix}{f.name}", _shown(node, f.name), comments.get(f.name, ""))
            for f in dataclasses.fields(cls) if f.name in node]


def key_rows() -> list[tuple[str, str, str]]:
    """(dotted key, default, comment) for every key: the base schema, then each model family's node.

    Defaults are the composed ones of conf/ without a recipe (model=FAMILY for a family's keys).
    """
    from .config import Config

    base = compose_config([])
    groups = [f for f in dataclasses.fields(Config) if f.default_factory is not dataclasses.MISSING]
    rows = [r for r in _rows(base, Config, "") if r[0] not in {f.name for f in groups}]
    for f in groups:
        if f.name != "model":
            rows += _rows(base[f.name], type(f.default_factory()), f"{f.name}.")
    for name, family in FAMILIES.items():
        node = compose_config([f"model={name}"]).model
        rows.append((f"model={name}", "", family.summary))
        rows += _rows(node, family.config, "model.")
    return rows


def print_keys() -> None:
    print("Every configuration key (python train.py KEY=VALUE ...), its default in conf/ and its meaning;\n"
          "a recipe (+recipe=NAME) or a group option (data=cifar10, model=wrn, ...) changes some defaults.\n"
          "The model node holds the selected family's keys (model=FAMILY; the default is model=resnext).")
    rows = key_rows()
    width = max(len(k) for k, _, _ in rows) + 2
    vwidth = min(max(len(v) for _, v, _ in rows), 14) + 2
    for key, value, comment in rows:
        if key.startswith("model="):
            print(f"\n{key}: {comment}")
        else:
            print(f"{key:<{width}}{value:<{vwidth}}{comment}")


@reports_user_errors
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return
    if "--keys" in argv:
        print_keys()
        return
    _, lines = describe(compose_config(argv))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
