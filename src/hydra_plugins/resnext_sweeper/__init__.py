"""``train.py -m``: Hydra's basic sweeper, with every point composed once and checked before any is launched.

Hydra's own sweeper composes each point twice (once to see that it composes, once in the launcher), and a
point whose settings are wrong would fail only when its turn came, after the points before it had trained.
This sweeper composes each point once, checks it as a single run is checked (one line, exit 2, before
anything is written: no multirun folder), and hands the configs it composed to Hydra's basic launcher, which
runs the points in this process. Another launcher (submitit's: one Slurm job per point) composes each point
again on its node, as it must; the check here still comes before anything is submitted, at this process's
world size and device (a job's own, on its nodes, is checked again when it starts there).
conf/config.yaml selects it (``hydra/sweeper: checked``); ``resnext.config.register`` stores its node. Hydra
instantiates plugins from the ``hydra_plugins`` namespace only, hence this package beside ``resnext``.
"""

from __future__ import annotations

import copy
import dataclasses

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from resnext.errors import ConfigError, fail


class _Composed:
    """The launcher's config loader: a point's config as the sweeper composed it (taken once), anything else
    from Hydra's loader."""

    def __init__(self, loader, configs: dict[tuple[str, ...], DictConfig]) -> None:
        self.loader, self.configs = loader, configs

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        cfg = self.configs.pop(tuple(sweep_overrides), None)
        if cfg is None:
            return self.loader.load_sweep_config(master_config, sweep_overrides)
        # as Hydra's loader does: the master's resolved values (a ${now:...} in hydra.sweep.dir, resolved once
        # when the sweep started) hold in every job
        OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
        return cfg

    def __getattr__(self, name: str):
        return getattr(self.loader, name)


class CheckedSweeper(BasicSweeper):
    """BasicSweeper whose points are composed and checked before the first is launched (module text)."""

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.composed: dict[tuple[str, ...], DictConfig] = {}
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        if type(self.launcher) is BasicLauncher:  # runs the points here: it takes the configs composed below
            self.launcher.hydra_context = dataclasses.replace(
                hydra_context, config_loader=_Composed(hydra_context.config_loader, self.composed))

    def sweep(self, arguments: list[str]):
        self.check(arguments)
        return super().sweep(arguments)

    def validate_batch_is_legal(self, batch) -> None:
        """Nothing left to do: sweep() composed and checked every point before writing anything."""

    def check(self, arguments: list[str]) -> None:
        """Compose every point once and validate it as this process would run it (its world size as the
        session reads it, a visible GPU); exit 2 in one line on the first mistake. The configs are kept for
        the basic launcher, which trains the points in this process (another composes them where it runs)."""
        import torch

        from resnext.compose import explain
        from resnext.config import validate
        from resnext.engine.dist import env_world

        loader = self.hydra_context.config_loader
        parser = OverridesParser.create(config_loader=loader)
        overrides = parser.parse_overrides([*self._parse_config(), *arguments])
        world, cuda = env_world()[2], torch.cuda.is_available()
        keep = type(self.launcher) is BasicLauncher
        swept = {o.key_or_group for o in overrides if o.is_sweep_override()}
        for batch in self.split_arguments(overrides, None):
            for point in batch:
                try:
                    cfg = loader.load_sweep_config(self.config, list(point))
                except Exception as e:  # Hydra raises several types; all are mistakes in the overrides
                    fail(explain(e, list(point)))
                task = copy.deepcopy(cfg)  # the point as its job sees it: without Hydra's node
                with open_dict(task):
                    del task["hydra"]
                try:
                    validate(task, world, cuda)
                except ConfigError as e:
                    where = " ".join(o for o in point if o.split("=", 1)[0].lstrip("+~") in swept)
                    fail(f"{where}: {e}" if where else str(e))
                if keep:
                    self.composed[tuple(point)] = cfg
