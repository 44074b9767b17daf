"""The family table: every family builds from its config node and variants; per-family keys; pre-act ResNet."""

from __future__ import annotations

import dataclasses
import inspect
import re

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.nn import functional as F

from resnext.compose import CONF_DIR, compose_config
from resnext.config import ConfigError, validate
from resnext.models import FAMILIES, VARIANTS, PreResNet, build_model, describe, family_of
from resnext.models.complexity import count_params, measure

SRC = CONF_DIR.parent / "src" / "resnext"


def test_every_family_has_a_conf_node_and_builds_from_it():
    assert sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")) == sorted(FAMILIES)
    for name, family in FAMILIES.items():
        cfg = compose_config([f"model={name}", "data.root=/d"])
        assert OmegaConf.get_type(cfg.model) is family.config and cfg.model.arch == name
        assert list(cfg.model) == family.keys()  # the node holds the family's keys, no other family's
        validate(cfg)
        with torch.device("meta"):  # num_classes 0 = from the data set
            model = build_model(cfg.model, num_classes=cfg.model.num_classes or 1000)
        assert isinstance(model, family.build) and count_params(model) > 0
        assert family.name(family.config()) and family.summary and family.input.size in (32, 224)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_config_defaults_are_the_constructors(name):
    """A family's dataclass is its constructor's signature plus arch, init_from (and num_classes for all)."""
    family = FAMILIES[name]
    params = inspect.signature(family.build).parameters
    fields = {f.name: f.default for f in dataclasses.fields(family.config)}
    assert set(fields) - set(params) == {"arch", "init_from", "bn_batch", "bn_stats"} and set(params) <= set(fields)
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
    assert msg.startswith("unknown model 'resnxt50_32x4d'; valid families: cifar_resnext, preresnet, resnet, resnext, wrn")
    assert all(v in msg for v in VARIANTS)
    with pytest.raises(ValueError, match=r"^arch='nope' is not a model family or variant; valid families: "):
        build_model({"arch": "nope", "depth": 50})
    with pytest.raises(ValueError, match=r"^widen_factor is not a key of the resnext family; valid keys: arch, "
                                         r"num_classes, init_from, bn_batch, bn_stats, depth, cardinality, width, zero_init_last_bn"):
        build_model("resnext50_32x4d", widen_factor=2)
    with pytest.raises(ValueError, match="cardinality is not a key of the wrn family; valid keys: .*widen_factor"):
        build_model({"arch": "wrn", "cardinality": 4})
    with pytest.raises(ValueError, match="depth must be one of"):  # the constructor's own check
        build_model("preresnet", depth=34)


def test_a_record_with_other_families_keys_is_refused():
    """No compatibility with the flat model records of unreleased versions: every key must be the family's."""
    old = dict(arch="wrn", depth=16, cardinality=32, width=4, widen_factor=2, dropout=0.0, num_classes=10)
    with pytest.raises(ValueError, match="cardinality is not a key of the wrn family"):
        build_model(old)


@pytest.mark.parametrize("overrides,family,key", [
    (["model.widen_factor=4"], "resnext", "model.widen_factor"),
    (["model=wrn", "model.cardinality=4"], "wrn", "model.cardinality"),
    (["model=cifar_resnext", "model.dropout=0.3"], "cifar_resnext", "model.dropout"),
    (["+recipe=resnet200_imagenet", "model.shortcut=false"], "preresnet", "model.shortcut"),
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
    assert FAMILIES["preresnet"].input == imagenet and FAMILIES["cifar_resnext"].input == cifar


def test_no_family_tests_outside_the_models_package():
    pattern = re.compile(r"arch ==|arch\"\) ==|isinstance\(.*(ResNeXt|WideResNet|PreResNet)|\.func is")
    hits = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py") if "models" not in p.parts
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


# ---------------------------------------------------------------- pre-activation ResNet

STAGES = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3), 200: (3, 24, 36, 3)}


def preresnet_counts(depth: int, size: int = 224, classes: int = 1000) -> tuple[int, int]:
    """(parameters, multiply-adds) of fb.resnet.torch's preresnet.lua ImageNet model, from its layer shapes.

    Written out from the Lua file, not from our modules: conv weights k*k*cin*cout (no biases: the Lua
    init drops them), BN 2 per channel, conv multiply-adds k*k*cin*cout*hout*wout, fc cin*cout (+ bias).
    """
    params, macs = 0, 0

    def conv(k, cin, cout, hw_out):
        nonlocal params, macs
        params += k * k * cin * cout
        macs += k * k * cin * cout * hw_out * hw_out

    def bn(c):
        nonlocal params
        params += 2 * c

    hw = size // 2  # 7x7/2 conv, padding 3
    conv(7, 3, 64, hw)
    bn(64)
    hw = (hw + 1) // 2  # 3x3/2 max pool, padding 1
    in_ch = 64
    for s, (blocks, n) in enumerate(zip(STAGES[depth], (64, 128, 256, 512), strict=True)):
        for b in range(blocks):
            stride = 2 if (s > 0 and b == 0) else 1
            out_hw = (hw - 1) // stride + 1
            if not (s == 0 and b == 0):  # 'no_preact' only for the first block after the stem
                bn(in_ch)  # 'both_preact' or the residual path's own BN-ReLU: one BN on the input either way
            conv(1, in_ch, n, hw)
            bn(n)
            conv(3, n, n, out_hw)
            bn(n)
            conv(1, n, 4 * n, out_hw)
            if in_ch != 4 * n:  # shortcut type B: a bare 1x1 conv where the shape changes
                conv(1, in_ch, 4 * n, out_hw)
            in_ch, hw = 4 * n, out_hw
    bn(in_ch)  # the final BN-ReLU before pooling
    params += in_ch * classes + classes
    macs += in_ch * classes
    return params, macs


@pytest.mark.parametrize("depth", sorted(STAGES))
def test_preresnet_params_and_macs_match_the_layer_shapes(depth):
    params, macs = preresnet_counts(depth)
    cx = measure(lambda: build_model("preresnet", depth=depth), 224)
    assert (cx.params, cx.macs) == (params, macs)


def test_preresnet200_counts():
    cx = measure(lambda: build_model("preresnet200"), 224)
    assert cx.params == 64_666_152  # about 64.7M
    assert cx.macs == 15_007_481_856  # 15.0 G multiply-adds per 224x224 image
    # against torchvision's post-activation ResNet-200 (64,673,832): the four projections lose their BN
    # (2 x 3840), the first blocks carry a BN of their input instead of their output (-2 x (256 + 1792)),
    # and a final BN of 2048 channels is added
    assert 64_673_832 - 2 * 3840 - 2 * (256 + 1792) + 2 * 2048 == cx.params
    with torch.device("meta"):
        post = build_model("resnet200")
    assert measure(lambda: post, 224).macs == cx.macs  # the same convolutions


def test_resnet200_recipe_builds_the_preactivation_network():
    cfg = compose_config(["+recipe=resnet200_imagenet", "data.root=/d"])
    validate(cfg, world_size=8, cuda=True)
    assert cfg.model.arch == "preresnet" and (cfg.paper.top1_err, cfg.paper.top5_err) == (21.7, 5.8)
    with torch.device("meta"):
        model = build_model(cfg.model)
    assert isinstance(model, PreResNet) and count_params(model) == 64_666_152
    assert describe(cfg.model) == "Pre-act ResNet-200 (1x64d)"
    recipe = (CONF_DIR / "recipe" / "resnet200_imagenet.yaml").read_text()
    assert "fb.resnet.torch" in recipe and "preresnet.lua" in recipe and "Identity Mappings" in recipe


def _lua_forward(sd: dict, x: torch.Tensor, depth: int) -> torch.Tensor:
    """preresnet.lua's ImageNet forward written out with torch.nn.functional over the state dict."""

    def bn_relu(t, key):
        return F.relu(F.batch_norm(t, sd[f"{key}.running_mean"], sd[f"{key}.running_var"], sd[f"{key}.weight"],
                                   sd[f"{key}.bias"], training=False, eps=1e-5))

    x = F.max_pool2d(bn_relu(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), "bn1"), 3, 2, 1)
    for s, blocks in enumerate(STAGES[depth]):
        for b in range(blocks):
            k = f"layer{s + 1}.{b}"
            stride = 2 if (s > 0 and b == 0) else 1
            kind = "no_preact" if (s == 0 and b == 0) else "both_preact" if b == 0 else "plain"
            block_in = bn_relu(x, f"{k}.bn1") if kind == "both_preact" else x
            r = bn_relu(block_in, f"{k}.bn1") if kind == "plain" else block_in
            r = bn_relu(F.conv2d(r, sd[f"{k}.conv1.weight"]), f"{k}.bn2")
            r = bn_relu(F.conv2d(r, sd[f"{k}.conv2.weight"], stride=stride, padding=1), f"{k}.bn3")
            r = F.conv2d(r, sd[f"{k}.conv3.weight"])
            proj = sd.get(f"{k}.downsample.weight")
            x = r + (block_in if proj is None else F.conv2d(block_in, proj, stride=stride))
    x = bn_relu(x, "bn").mean((2, 3))
    return F.linear(x, sd["fc.weight"], sd["fc.bias"])


def test_preresnet_forward_follows_preresnet_lua():
    torch.manual_seed(0)
    model = build_model("preresnet50", num_classes=10).double().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # away from identity, so every BN's place matters
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    assert model.layer1[0].bn1 is None and model.layer2[0].preact == "both"  # the Lua's two special blocks
    assert isinstance(model.layer2[0].downsample, nn.Conv2d)  # a bare conv, no BN
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _lua_forward(model.state_dict(), x, 50), rtol=1e-10, atol=1e-10)
