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


def _explain(exc: Exception, overrides: list[str]) -> str:
    """One line for a Hydra/OmegaConf composition error."""
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if key == "recipe" and value not in recipes():
            return f"unknown recipe {value!r}; available recipes: {', '.join(recipes())}"
    text = " ".join(str(exc).split())
    cause = exc.__cause__
    if cause is not None and str(cause):
        text = " ".join(str(cause).split())
    text = text.split(" full_key:")[0].split(" Key '")[0] if "full_key" in text else text
    return text.replace("Could not override", "cannot set").rstrip(".")


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
        raise ConfigError(_explain(e, overrides)) from None
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
