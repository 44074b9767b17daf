"""The family table: every family builds from its config node and from its variants; per-family keys."""

from __future__ import annotations

import dataclasses
import inspect
import re

import pytest
import torch
from omegaconf import OmegaConf

from resnext.compose import CONF_DIR, compose_config
from resnext.config import ConfigError, validate
from resnext.models import FAMILIES, VARIANTS, build_model, describe, family_of, resolve
from resnext.models.complexity import count_params

SRC = CONF_DIR.parent / "src" / "resnext"


def test_every_family_has_a_conf_node_and_builds_from_it():
    assert sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")) == sorted(FAMILIES)
    for name, family in FAMILIES.items():
        cfg = compose_config([f"model={name}", "data.root=/d"])
        assert OmegaConf.get_type(cfg.model) is family.config and cfg.model.arch == name
        assert list(cfg.model) == family.keys()  # the node holds the family's keys, no other family's
        validate(cfg)
        with torch.device("meta"):
            model = build_model(cfg.model)
        assert isinstance(model, family.build) and count_params(model) > 0
        assert family.name(family.config()) and family.summary and family.input.size in (32, 224)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_config_defaults_are_the_constructors(name):
    """A family's dataclass is its constructor's signature plus arch, init_from (and num_classes for all)."""
    family = FAMILIES[name]
    params = inspect.signature(family.build).parameters
    fields = {f.name: f.default for f in dataclasses.fields(family.config)}
    assert set(fields) - set(params) == {"arch", "init_from"} and set(params) <= set(fields)
    assert {k: fields[k] for k in params} == {k: p.default for k, p in params.items()}
    assert fields["arch"] == name


def test_every_family_module_comments_every_key():
    for family in FAMILIES.values():
        source = inspect.getsource(family.config)
        for key in dataclasses.fields(family.config):
            if key.name in ("arch",) or key.name not in source:
                continue  # inherited (commented in ModelConfig) or the family's fixed name
            line = next(ln for ln in source.splitlines() if ln.strip().startswith(f"{key.name}:"))
            assert "  # " in line, line


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_builds_as_family_plus_arguments(name):
    family, args = VARIANTS[name]
    with torch.device("meta"):
        by_name = build_model(name, num_classes=7)
        by_mapping = build_model({"arch": family, **args, "num_classes": 7})
    assert type(by_name) is FAMILIES[family].build and by_name.fc.out_features == 7
    assert [(k, v.shape) for k, v in by_name.state_dict().items()] == \
        [(k, v.shape) for k, v in by_mapping.state_dict().items()]
    assert family_of(name) is FAMILIES[family] and describe(name) == describe({"arch": family, **args})


def test_unknown_names_and_keys_list_the_valid_ones():
    with pytest.raises(ValueError) as e:
        build_model("resnxt50_32x4d")
    msg = str(e.value)
    assert msg.startswith("unknown model 'resnxt50_32x4d'; valid families: cifar_resnext, resnext, wrn")
    assert all(v in msg for v in VARIANTS)
    with pytest.raises(ValueError, match=r"^arch='nope' is not a model family or variant; valid families: "):
        build_model({"arch": "nope", "depth": 50})
    with pytest.raises(ValueError, match=r"^widen_factor is not a key of the resnext family; valid keys: arch, "
                                         r"num_classes, init_from, depth, cardinality, width, zero_init_last_bn"):
        build_model("resnext50_32x4d", widen_factor=2)
    with pytest.raises(ValueError, match="cardinality is not a key of the wrn family; valid keys: .*widen_factor"):
        build_model({"arch": "wrn", "cardinality": 4})
    with pytest.raises(ValueError, match="depth must be one of"):  # the constructor's own check
        build_model("resnext", depth=34)


def test_old_flat_model_records_still_build():
    """Checkpoints and config.yaml files written before per-family nodes hold every family's keys."""
    old = dict(arch="wrn", depth=16, cardinality=32, width=4, widen_factor=2, dropout=0.0, num_classes=10,
               zero_init_last_bn=False, shortcut=True, init_from=None)
    assert build_model(old).fc.in_features == 128
    old = dict(arch="cifar_resnext", depth=11, cardinality=2, width=4, widen_factor=10, dropout=0.0,
               num_classes=10, zero_init_last_bn=False, shortcut=True)
    assert resolve(old)[1] == FAMILIES["cifar_resnext"].config(depth=11, cardinality=2, width=4)
    with pytest.raises(ValueError, match="widen_factor is not a key"):  # not the old default: it meant something
        build_model({**old, "widen_factor": 4})


@pytest.mark.parametrize("overrides,family,key", [
    (["model.widen_factor=4"], "resnext", "model.widen_factor"),
    (["model=wrn", "model.cardinality=4"], "wrn", "model.cardinality"),
    (["model=cifar_resnext", "model.dropout=0.3"], "cifar_resnext", "model.dropout"),
    (["+recipe=wrn28_10_cifar10", "model.shortcut=false"], "wrn", "model.shortcut"),
])
def test_keys_of_other_families_are_refused_with_one_line(overrides, family, key):
    with pytest.raises(ConfigError) as e:
        compose_config(overrides)
    keys = ", ".join(FAMILIES[family].keys())
    assert str(e.value) == f"unknown key {key}; valid keys of model ({family}): {keys}"


def test_arch_must_match_the_selected_node():
    cfg = compose_config(["model=wrn", "model.arch=resnext", "data.root=/d"])
    with pytest.raises(ConfigError, match="model.arch=resnext but the model node is WideResNetConfig; "
                                          "select the family with model=resnext"):
        validate(cfg)


def test_family_input_defaults_match_the_data_sets():
    from resnext.data.cifar import CIFAR_MEAN, CIFAR_STD
    from resnext.data.imagenet_folder import MEAN, STD

    imagenet, cifar = FAMILIES["resnext"].input, FAMILIES["wrn"].input
    assert (imagenet.size, imagenet.resize, imagenet.mean, imagenet.std) == (224, 256, MEAN, STD)
    assert (cifar.size, cifar.resize, cifar.mean, cifar.std) == (32, 32, CIFAR_MEAN, CIFAR_STD)
    assert FAMILIES["cifar_resnext"].input == cifar


def test_no_family_tests_outside_the_models_package():
    pattern = re.compile(r"arch ==|arch\"\) ==|isinstance\(.*(ResNeXt|WideResNet|PreResNet)|\.func is")
    hits = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py") if "models" not in p.parts
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []
