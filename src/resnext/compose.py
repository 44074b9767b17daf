"""Compose the Hydra config from command-line overrides and turn composition mistakes into one line."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from .config import register, validate
from .errors import ConfigError, UserError, fail
from .outputs import check_folder

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
RECIPES_DIR = ROOT / "recipes"


def recipes() -> list[str]:
    """Names usable as ``+recipe=NAME``."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def _unknown_key(full_key: str, node_type: type | None = None) -> str:
    """One line naming the valid keys of the node the key was looked up in (the selected family's, for model)."""
    import dataclasses

    from omegaconf import OmegaConf

    from .config import Config

    group = full_key.rsplit(".", 1)[0] if "." in full_key else ""
    if node_type is not None and dataclasses.is_dataclass(node_type):
        keys = [f.name for f in dataclasses.fields(node_type)]
        arch = next((f.default for f in dataclasses.fields(node_type) if f.name == "arch"), None)
        where = f"{group} ({arch})" if group == "model" and arch else group
        return f"unknown key {full_key}; valid keys{' of ' + where if where else ''}: {', '.join(keys)}"
    node = OmegaConf.structured(Config)
    node = OmegaConf.select(node, group) if group else node
    valid = ", ".join(node.keys()) if node is not None and hasattr(node, "keys") else "python -m resnext.info --keys"
    return f"unknown key {full_key}; valid keys{' of ' + group if group else ''}: {valid}"


def explain(exc: Exception, overrides: list[str] = ()) -> str:
    """One line for a Hydra/OmegaConf composition error, naming the key and what would be valid.

    Mapped by exception type (OmegaConf's key/validation errors carry the key, Hydra's missing-config
    error the group and its options); only the first line of the message is shown otherwise.
    """
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if key == "recipe" and value not in recipes():
            return f"unknown recipe {value!r}; available recipes: {', '.join(recipes())}"
        if key == "recipe" and not o.startswith("+"):
            return (f"{o}: a recipe is added to the configuration, not overridden: write +recipe={value} "
                    "(with the plus)")
    chain, e = [], exc
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        if isinstance(e, (ConfigKeyError, ConfigAttributeError)) and getattr(e, "full_key", None):
            return _unknown_key(e.full_key, getattr(e, "object_type", None))
        if isinstance(e, OmegaConfBaseException) and getattr(e, "full_key", None):
            return f"{e.full_key}: {str(getattr(e, 'msg', None) or e).splitlines()[0].rstrip('.')}"
        if isinstance(e, MissingConfigException):
            group, _, choice = str(e.missing_cfg_file).rpartition("/")
            opts = ", ".join(e.options or [])
            return f"{group or 'config'} option {choice!r} does not exist; valid {group} options: {opts}"
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__).rstrip(".")


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


def sweep_dirname(argv: list[str]) -> list[str]:
    """For a multirun (``-m``): a Hydra override that names each run's directory by its swept keys only
    (multirun/<name>/model.cardinality=8): every key given one value is excluded from
    ``hydra.job.override_dirname``. As a Hydra override it reaches every launcher's jobs (submitit's too)."""
    if not any(a in ("-m", "--multirun") for a in argv) or any(
            a.startswith("hydra.job.config.override_dirname") for a in argv):
        return []
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides([a for a in argv if not a.startswith("-")])
    except Exception:
        return []  # Hydra itself reports the mistake
    fixed = sorted({o.key_or_group for o in parsed if not o.is_hydra_override() and not o.is_sweep_override()})
    return ["hydra.job.config.override_dirname.exclude_keys=[" + ",".join(f"'{k}'" for k in fixed) + "]"]


def compose_run(overrides: list[str]) -> tuple[DictConfig, Path]:
    """One composition of a single (non-multirun) command: its config (without Hydra's node, as Hydra's main
    hands it over) and the run directory it trains in (``hydra.run.dir``, resolved, absolute)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
            run_dir = Path(str(cfg.hydra.run.dir)).absolute()
            with open_dict(cfg):
                del cfg["hydra"]
            return cfg, run_dir
    except Exception as e:
        raise ConfigError(explain(e, overrides)) from None
    finally:
        GlobalHydra.instance().clear()


def run_dir_of(overrides: list[str]) -> Path:
    """The run directory a single (non-multirun) command trains in: Hydra's ``hydra.run.dir``, resolved."""
    return compose_run(overrides)[1]


def single_run(argv: list[str]) -> tuple[DictConfig, Path] | None:
    """train.py's start for one run: (config, run directory) from one composition, the directory checked (it
    is, or can become, a writable folder); None where Hydra's own main must handle the command (a multirun,
    a showing flag such as --help or --cfg, any other option). The config itself is validated by the
    session, before anything is written; a mistake here ends the process in one line, exit 2."""
    if any(a.startswith("-") for a in argv):
        return None
    try:
        cfg, run_dir = compose_run(argv)
        check_run_dir(run_dir)
    except ConfigError as e:
        fail(str(e))
    return cfg, run_dir


def check_run_dir(run_dir: Path) -> None:
    """ConfigError unless ``run_dir`` is, or can become, a writable folder (tried without leaving a trace).
    A read-only folder holding checkpoints passes: the run may be finished, which needs no writing."""
    from .engine.rundir import RunDir

    try:
        check_folder(run_dir, f"hydra.run.dir={run_dir}")
    except UserError as e:
        if not any(RunDir(run_dir).checkpoint(name).is_file() for name in ("last", "last.prev")):
            raise ConfigError(str(e)) from None


#: Hydra's flags that print something and train nothing (``--cfg job``, ``--help``, ...): no precheck then.
SHOW_FLAGS = ("-h", "--help", "--hydra-help", "--version", "-c", "--cfg", "-i", "--info", "-sc",
              "--shell-completion")


def precheck(argv: list[str], world: int | None = None, cuda: bool | None = None) -> None:
    """Compose and validate what a single run's command line asks for and check its run directory; exit 2
    on a mistake. For train.py's commands that Hydra's main runs without a sweep (an option Hydra reads, such
    as --config-dir), before Hydra starts, so a bad command writes nothing anywhere. Skipped for Hydra's
    showing flags (``--cfg job``, ``--help``, ``--info``: they train nothing) and for multiruns, whose
    sweeper (src/hydra_plugins/resnext_sweeper) checks every point itself. ``world`` and ``cuda`` default to this process's
    (its world size as the session reads it, engine.dist.env_world; a visible GPU)."""
    import torch

    if any(a.split("=", 1)[0] in SHOW_FLAGS or a in ("-m", "--multirun") for a in argv):
        return
    overrides = [a for a in argv if not a.startswith("-")]
    if world is None:
        from .engine.dist import env_world

        world = env_world()[2]
    cuda = torch.cuda.is_available() if cuda is None else cuda
    try:
        cfg, run_dir = compose_run(overrides)
        validate(cfg, world, cuda)
        check_run_dir(run_dir)
    except ConfigError as e:
        fail(str(e))


def main(argv: list[str] | None = None) -> None:
    """`python -m resnext.compose [--world N] [--cuda] OVERRIDES...`: train.py's own check of a command for
    a job that starts elsewhere (slurm/submit.sh, before sbatch): the precheck at the job's world size and
    device, then the run directory's saved settings (a resume with others is refused, as the job would);
    prints the run directory (Hydra's hydra.run.dir, as a local run resolves it). One line, exit 2 on a mistake."""
    import sys

    from .engine.rundir import RunDir, check_resume
    from .errors import OneLineParser, UserError

    parser = OneLineParser(prog="python -m resnext.compose", description=main.__doc__)
    parser.add_argument("--world", type=int, default=1, help="training processes of the job (all nodes)")
    parser.add_argument("--cuda", action="store_true", help="the job's nodes have GPUs")
    args, overrides = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if any(o.startswith("-") for o in overrides):
        parser.error(f"unknown option {next(o for o in overrides if o.startswith('-'))}")
    try:
        cfg, run_dir = compose_run(overrides)  # once: the config and its run directory
        validate(cfg, args.world, args.cuda)
        check_run_dir(run_dir)
        saved = RunDir(run_dir).saved_config()
        if saved is not None:
            check_resume(saved, cfg, list(cfg.trainer.accept_changes))
    except UserError as e:
        fail(str(e))
    print(run_dir)


if __name__ == "__main__":
    main()
