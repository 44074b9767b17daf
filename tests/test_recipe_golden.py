"""Every recipe resolves to the configuration recorded in tests/golden/recipes.json: a new method (issue 24's
EMA, mixup, drop path, ...) arrives switched off and changes no paper recipe. A deliberate change of a recipe
rewrites the record: `python tests/test_recipe_golden.py --write`, and the diff shows what moved."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from resnext.compose import compose_config

GOLDEN = Path(__file__).resolve().parent / "golden" / "recipes.json"
RECIPES = Path(__file__).resolve().parents[1] / "conf" / "recipe"
MACHINE = {"data.workers"}  # resolved from this machine's cores, not from the recipe
#: Keys added after the record, with the value that leaves their method off (every recipe not using it).
OFF: dict[str, object] = {"optim.name": "sgd", "optim.betas": [0.9, 0.999], "optim.eps": 1.0e-8,
                          "optim.clip_grad_norm": 0.0, "model.drop_path": 0.0,
                          "trainer.ema_decay": 0.0, "trainer.ema_every": 1, "trainer.ema_warmup_epochs": 0.0,
                          "data.mixup_alpha": 0.0, "data.cutmix_alpha": 0.0,
                          "data.auto_augment": "none", "data.randaugment_ops": 2, "data.randaugment_magnitude": 9,
                          "data.random_erase": 0.0, "data.repeated_aug": 1}


def flat(node, prefix: str = "") -> dict:
    out = {}
    for k, v in node.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resolved(name: str) -> dict:
    d = flat(OmegaConf.to_container(compose_config([f"+recipe={name}"]), resolve=True))
    return {k: v for k, v in sorted(d.items()) if k not in MACHINE}


def test_every_recorded_recipe_resolves_as_recorded_with_new_methods_off():
    golden = json.loads(GOLDEN.read_text())
    assert set(golden) <= {f.stem for f in RECIPES.glob("*.yaml")}  # no recorded recipe was dropped
    for name, want in golden.items():
        got = resolved(name)
        assert {k: got.get(k, "<missing>") for k in want} == want, name
        new = {k: got[k] for k in sorted(set(got) - set(want))}
        assert new == {k: OFF.get(k, "<not registered in OFF>") for k in new}, name


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    GOLDEN.write_text(json.dumps({f.stem: resolved(f.stem) for f in sorted(RECIPES.glob("*.yaml"))}, indent=1,
                                 sort_keys=True) + "\n")
