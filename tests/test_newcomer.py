"""The newcomer's path: every key listed with its meaning, Hydra's showing flags without data.root."""

from __future__ import annotations

import dataclasses
import subprocess

import pytest
import yaml
from runs import PY, ROOT, env

from resnext.config import Config
from resnext.info import field_comments, key_rows
from resnext.models import FAMILIES


def test_info_keys_lists_every_key_with_its_default_and_comment():
    rows = key_rows()
    shown = {k: (v, c) for k, v, c in rows if not k.startswith("model=")}
    expected = {"name"}
    for f in dataclasses.fields(Config):
        if f.default_factory is not dataclasses.MISSING and f.name != "model":
            expected |= {f"{f.name}.{g.name}" for g in dataclasses.fields(type(f.default_factory()))}
    assert expected <= shown.keys(), expected - shown.keys()
    missing = [k for k, (_, c) in shown.items() if not c]
    assert not missing, f"keys without a one-line comment: {missing}"
    assert shown["data.batch_size"] == ("256", "global mini-batch over all ranks (split evenly between them)")
    assert shown["schedule.milestones"][0] == "[30, 60, 90]" and shown["data.root"][0] == "null"
    # each family's node, with the defaults its conf/model/<family>.yaml gives
    headers = [k for k, _, _ in rows if k.startswith("model=")]
    assert headers == [f"model={name}" for name in FAMILIES]
    for name, family in FAMILIES.items():
        start = [k for k, _, _ in rows].index(f"model={name}")
        block = rows[start + 1:start + 1 + len(family.keys())]
        assert [k for k, _, _ in block] == [f"model.{k}" for k in family.keys()]
        assert block[0][1] == name and all(c for _, _, c in block)
        assert set(field_comments(family.config)) == set(family.keys())


def test_info_keys_command_prints_them():
    res = subprocess.run([PY, "-m", "resnext.info", "--keys"], capture_output=True, text=True, env=env(),
                         timeout=120)
    assert res.returncode == 0, res.stderr
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("trainer.log_every "))
    assert line.split()[1] == "50" and "steps between metrics.jsonl" in line
    assert "model=wrn: Wide ResNet" in res.stdout


@pytest.mark.parametrize("args, expect", [
    (["--help"], "python -m resnext.info --keys"),
    (["--hydra-help"], "--cfg,-c"),
    (["--info"], "Config search path"),
    (["--cfg", "job", "+recipe=resnext50_32x4d_imagenet"], "name: resnext50_32x4d_imagenet"),
    (["--cfg", "job", "--resolve", "+recipe=resnext29_demo_digits", "optim.lr=0.3"], "lr: 0.3"),
    (["-c", "job", "-p", "model", "+recipe=resnext50_32x4d_imagenet"], "cardinality: 32"),
])
def test_hydra_showing_flags_work_without_data_root(tmp_path, args, expect):
    res = subprocess.run([PY, str(ROOT / "train.py"), *args], capture_output=True, text=True, env=env(),
                         cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert expect in res.stdout and "error" not in res.stderr
    assert list(tmp_path.iterdir()) == []  # nothing trained, nothing written
    if args[0] == "--cfg" and "-p" not in args:
        cfg = yaml.safe_load(res.stdout)
        assert cfg["data"]["root"] is None and "hydra" not in cfg


def test_a_bad_override_is_still_refused_before_hydra(tmp_path):
    res = subprocess.run([PY, str(ROOT / "train.py"), "+recipe=resnext29_demo_digits", "model.cardnality=4"],
                         capture_output=True, text=True, env=env(), cwd=tmp_path, timeout=120)
    assert res.returncode == 2 and res.stderr.startswith("error: unknown key model.cardnality")
    assert list(tmp_path.iterdir()) == []
