"""`bench e2e`: real end-to-end training throughput (data + step) against synthetic data, same model."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from .common import environment, interleaved, paired_ratio, table


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", help="train.py overrides, e.g. +recipe=resnext29_demo_digits")
    p.add_argument("--steps", type=int, default=10, help="steps per timed repeat")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")


def _fit(overrides: list[str], steps: int):
    from ..compose import compose_config
    from ..engine.dist import init_world
    from ..session import build

    cfg = compose_config([*overrides, "trainer.progress=false", f"trainer.log_every={steps}",
                          f"trainer.max_steps_per_epoch={steps}"])
    world = init_world(cfg.trainer.device)
    return build(cfg, world, Path(tempfile.mkdtemp(prefix="bench-e2e-"))), cfg


def run(args) -> dict:
    from ..engine.stop import StopFlag

    real, cfg = _fit(args.overrides, args.steps)
    n = cfg.data.batch_size * args.steps
    size = cfg.data.image_size
    synth, _ = _fit([*args.overrides, "data.dataset=synthetic", "data.backend=synthetic",
                     f"data.synthetic_size={size}", f"data.synthetic_train={n}",
                     f"data.synthetic_val={cfg.data.batch_size}",
                     f"model.num_classes={real.raw.fc.out_features}"], args.steps)
    synth.raw.load_state_dict(real.raw.state_dict())
    stop = StopFlag()
    epochs = {"real": 0, "synth": 0}
    trained_steps = {"real": [], "synth": []}

    def go(fit, key):
        def run_once() -> int:
            """At least ``--steps`` steps, over as many (fresh) epochs as that takes when an epoch of the data
            is shorter; returns the images the trainer counted as stepped on."""
            before, steps = fit.images_trained, 0
            while steps < args.steps:
                epochs[key] += 1
                fit.state.epoch, fit.state.step_in_epoch = epochs[key], 0
                fit.train_epoch(stop)
                if fit.state.step_in_epoch == 0:
                    raise RuntimeError(f"bench e2e: an epoch of {key} data trained no step")
                steps += fit.state.step_in_epoch
            trained_steps[key].append(steps)
            return fit.images_trained - before
        return run_once

    res = interleaved({"end-to-end": go(real, "real"), "synthetic": go(synth, "synth")}, real.world.device,
                      args.repeats)
    rows = [{"input": k, "images_per_s": v["images_per_s"], "ratio": paired_ratio(res, k, "synthetic"),
             "images": v["images"], "seconds": v["seconds"]} for k, v in res.items()]
    settings = vars(args) | {"environment": environment(real.world.device), "dataset": cfg.data.dataset,
                             "backend": cfg.data.backend, "steps_per_epoch": real.steps_per_epoch,
                             "steps_trained": trained_steps}
    return {"rows": rows, "settings": settings,
            "table": table(rows, [("input", "input", ""), ("images_per_s", "images/s", ".1f"),
                                  ("ratio", "vs synthetic", ".3f")])}
