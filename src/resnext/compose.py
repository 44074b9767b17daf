"""Compose the Hydra config from command-line overrides and turn composition mistakes into one line."""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

from omegaconf import DictConfig

from .config import ConfigError, register, validate

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
RECIPES_DIR = ROOT / "recipes"
EXIT_USER_ERROR = 2


def recipes() -> list[str]:
    """Names usable as ``+recipe=NAME``."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def fail(message: str) -> None:
    """Report a user mistake: one line on stderr, exit code 2, no traceback."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)


def explain(exc: Exception, overrides: list[str] = ()) -> str:
    """One line for a Hydra/OmegaConf composition error, naming the key and what would be valid."""
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if key == "recipe" and value not in recipes():
            return f"unknown recipe {value!r}; available recipes: {', '.join(recipes())}"
    cause = exc.__cause__ if exc.__cause__ is not None and str(exc.__cause__) else exc
    lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    head = lines[0] if lines else type(cause).__name__
    full_key = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("full_key:")), None)
    if head.startswith("Key ") and full_key:
        from omegaconf import OmegaConf

        from .config import Config

        group = full_key.rsplit(".", 1)[0] if "." in full_key else ""
        node = OmegaConf.select(OmegaConf.structured(Config), group) if group else OmegaConf.structured(Config)
        valid = ", ".join(node.keys()) if node is not None and hasattr(node, "keys") else "see --cfg job"
        return f"unknown key {full_key}; valid keys{' of ' + group if group else ''}: {valid}"
    if full_key:
        return f"{full_key}: {head}"
    if "Available options in" in str(cause):
        group = head.split("Could not find '")[-1].split("/")[0]
        opts = [ln for ln in lines[lines.index(next(x for x in lines if x.startswith("Available"))) + 1:]
                if not ln.startswith(("Config search path", "provider="))]
        head = head.removeprefix("In 'config': ")
        return f"{head}; valid {group} options: {', '.join(opts)}"
    return head.rstrip(".")


def compose_config(overrides: list[str]) -> DictConfig:
    """The composed config (without Hydra's own node) for the given overrides; ConfigError on mistakes."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=overrides)
    except Exception as e:  # Hydra raises several types; all of them are mistakes in the overrides
        raise ConfigError(explain(e, overrides)) from None
    finally:
        GlobalHydra.instance().clear()


def expand_sweeps(overrides: list[str]) -> list[list[str]]:
    """Every combination of a multirun's comma/range sweeps, without Hydra's own ``hydra.*`` keys."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:
        raise ConfigError(" ".join(str(e).split())) from None
    options = []
    for o in parsed:
        if o.is_hydra_override():
            continue
        if o.is_sweep_override():
            options.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
        else:
            options.append([o.input_line])
    return [list(c) for c in itertools.product(*options)]


def precheck(argv: list[str]) -> None:
    """Compose and validate what the command line asks for (each sweep point); exit 2 on a mistake.

    Runs before Hydra starts, so a bad command writes nothing into any run directory.
    """
    import torch

    overrides = [a for a in argv if not a.startswith("-")]
    world = int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")))
    try:
        for combo in expand_sweeps(overrides):
            cfg = compose_config(combo)
            validate(cfg, world, torch.cuda.is_available())
    except ConfigError as e:
        fail(str(e))
