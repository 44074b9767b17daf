"""The NVIDIA recipe holds DeepLearningExamples' values (configs.yml, main.py, optimizers.py, resnet.py), and
each takes effect: weight decay per parameter kind, SGD without Nesterov, fan_in convs, crop + flip only,
the per-epoch warmup + cosine, label smoothing as their smoothing.py computes it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as F
from PIL import Image

from resnext.compose import compose_config
from resnext.config import ConfigError, validate
from resnext.data.imagenet_augment import AugConfig, draw
from resnext.data.imagenet_folder import MEAN, STD
from resnext.data.imagenet_torch import TrainTransform
from resnext.engine.dist import World
from resnext.optim import param_groups
from resnext.plan import RunPlan
from resnext.schedule import Schedule, lr_at
from resnext.session import build_parts

RECIPE = "+recipe=resnext101_32x4d_nvidia"

# NVIDIA DeepLearningExamples, PyTorch/Classification/ConvNets (commit 729963dd): key -> (value, where)
NVIDIA = {
    "model.depth": (101, "models/resnet.py resnext101-32x4d layers [3, 4, 23, 3]"),
    "model.cardinality": (32, "models/resnet.py resnext101-32x4d cardinality=32"),
    "model.width": (4, "models/resnet.py widths[0] 128 / cardinality 32"),
    "model.init_mode": ("fan_in", "models/resnet.py ResNet.Params conv_init='fan_in'"),
    "model.zero_init_last_bn": (False, "models/resnet.py last_bn_0_init=False"),
    "data.batch_size": (1024, "configs.yml DGX1V AMP batch_size 128 x 8 GPUs = resnet_params_1k"),
    "data.image_size": (224, "configs.yml resnet_params image_size"),
    "data.val_resize": (256, "dataloaders.py Resize(image_size + crop_padding 32)"),
    "data.val_crop": (224, "dataloaders.py CenterCrop(image_size)"),
    "data.interpolation": ("bilinear", "configs.yml resnet_params interpolation"),
    "data.min_area": (0.08, "dataloaders.py RandomResizedCrop default scale (0.08, 1)"),
    "data.min_aspect": (0.75, "dataloaders.py RandomResizedCrop default ratio (3/4, 4/3)"),
    "data.flip": (True, "dataloaders.py RandomHorizontalFlip"),
    "data.color_jitter": (0.0, "dataloaders.py: no ColorJitter (main.py --augmentation None)"),
    "data.lighting": (0.0, "dataloaders.py: no lighting noise"),
    "optim.lr": (0.256, "configs.yml resnet_params_1k lr 1.024 for batch 1024"),
    "optim.ref_batch": (256, "README: 0.256 for 256, linear scaling"),
    "optim.momentum": (0.875, "configs.yml resnet_params momentum"),
    "optim.nesterov": (False, "main.py --nesterov store_true"),
    "optim.weight_decay": (6.103515625e-05, "configs.yml resnet_params_1k weight_decay"),
    "optim.no_decay": ("bn_named", "optimizers.py get_sgd_optimizer: 'bn' in n (--bn-weight-decay off)"),
    "optim.label_smoothing": (0.1, "configs.yml resnet_params label_smoothing"),
    "schedule.name": ("cosine", "configs.yml resnet_params lr_schedule"),
    "schedule.warmup_epochs": (8, "configs.yml resnet_params warmup"),
    "schedule.warmup_start": (0.0, "optimizers.py lr_cosine_policy: base * (e + 1) / warmup"),
    "schedule.granularity": ("epoch", "training.py lr_scheduler(optimizer, i, epoch): lr by epoch"),
    "schedule.final_lr": (0.0, "main.py --end-lr default 0"),
    "trainer.epochs": (90, "training/AMP/DGX1V_resnext101-32x4d_AMP_90E.sh --epochs 90"),
    "trainer.precision": ("fp16", "configs.yml precision AMP amp: True"),
    "trainer.loss_scale": (128.0, "main.py GradScaler init_scale = configs.yml AMP static_loss_scale 128"),
    "trainer.loss_scale_growth": (100, "main.py GradScaler growth_interval 100 (AMP dynamic_loss_scale)"),
    "trainer.channels_last": ("true", "configs.yml DGX1V AMP memory_format nhwc"),
}


def nvidia_lr(base: float, epoch: int, warmup: int = 8, epochs: int = 90, end_lr: float = 0.0) -> float:
    """optimizers.py lr_cosine_policy's _lr_fn, transcribed."""
    if epoch < warmup:
        return base * (epoch + 1) / warmup
    e, es = epoch - warmup, epochs - warmup
    return end_lr + (0.5 * (1 + np.cos(np.pi * e / es)) * (base - end_lr))


def nvidia_label_smoothing(x: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
    """smoothing.py LabelSmoothing.forward, transcribed."""
    logprobs = torch.nn.functional.log_softmax(x, dim=-1)
    nll = -logprobs.gather(dim=-1, index=target.unsqueeze(1)).squeeze(1)
    return ((1.0 - smoothing) * nll + smoothing * -logprobs.mean(dim=-1)).mean()


@pytest.fixture(scope="module")
def cfg():
    c = compose_config([RECIPE, "data.root=/data/imagenet"])
    validate(c, world_size=8, cuda=True)
    return c


@pytest.fixture(scope="module")
def parts(cfg, tmp_path_factory):
    """The trainer's parts as session.build_parts makes them from the recipe (synthetic data on the CPU)."""
    c = compose_config([RECIPE, "data.backend=synthetic", "data.synthetic_train=16", "data.synthetic_val=8",
                        "data.synthetic_size=32", "data.batch_size=8", "trainer.device=cpu",
                        "trainer.precision=fp32", "trainer.channels_last=false"])
    world = World(0, 0, 1, torch.device("cpu"))
    torch.manual_seed(0)
    return build_parts(c, world, tmp_path_factory.mktemp("run"), None, RunPlan.of(c, 1))


def test_every_setting_is_nvidias(cfg):
    wrong = {}
    for key, (value, where) in NVIDIA.items():
        got = cfg
        for part in key.split("."):
            got = got[part]
        if got != value:
            wrong[key] = (got, value, where)
    assert not wrong
    assert cfg.paper.top1_err == pytest.approx(100 - 79.47)  # README, 90 epochs AMP on DGX A100


def test_weight_decay_per_parameter_kind(parts, cfg):
    (p, _opts, _plan), wd = parts, cfg.optim.weight_decay
    decay_of = {id(q): g["weight_decay"] for g in p.opt.param_groups for q in g["params"]}
    named = dict(p.raw.named_parameters())
    assert len(decay_of) == len(named)
    expect = {
        "conv1.weight": wd, "bn1.weight": 0.0, "bn1.bias": 0.0,  # stem
        "layer1.0.conv2.weight": wd, "layer1.0.bn1.weight": 0.0, "layer2.3.bn2.bias": 0.0,
        "layer4.2.bn3.weight": 0.0, "layer4.2.bn3.bias": 0.0,
        # their rule is by name: the projection shortcut's BN is "downsample.1", so it is decayed
        "layer1.0.downsample.0.weight": wd, "layer1.0.downsample.1.weight": wd, "layer3.0.downsample.1.bias": wd,
        "fc.weight": wd, "fc.bias": wd,  # biases are decayed (only BN is exempt)
    }
    assert {k: decay_of[id(named[k])] for k in expect} == expect
    for name, q in named.items():  # every parameter: exempt exactly when NVIDIA's `"bn" in n` says so
        assert decay_of[id(q)] == (0.0 if "bn" in name else wd), name


def test_no_decay_rules():
    from resnext.models import build_model

    model = build_model("resnext50_32x4d", num_classes=10)
    names = {id(q): n for n, q in model.named_parameters()}

    def exempted(rule):
        groups = param_groups(model, 1e-4, rule)
        return {names[id(q)] for g in groups if g["weight_decay"] == 0 for q in g["params"]}

    bns = {n for n in names.values() if ".bn" in f".{n}" or "downsample.1" in n}
    assert exempted("none") == set()
    assert exempted("bn") == bns
    assert exempted("bn_and_bias") == bns | {"fc.bias"}
    assert exempted("bn_named") == {n for n in bns if "downsample" not in n}
    with pytest.raises(ConfigError, match="decay_bn_and_bias"):  # the unreleased old spelling is gone
        compose_config(["optim.decay_bn_and_bias=false"])
    with pytest.raises(ConfigError, match="optim.no_decay='all' is not valid; choose one of none, bn_and_bias"):
        validate(compose_config(["optim.no_decay=all", "data.root=/d"]))


def test_sgd_momentum_without_nesterov(parts):
    opt = parts[0].opt
    assert type(opt) is torch.optim.SGD
    assert all(g["momentum"] == 0.875 and g["nesterov"] is False and g["dampening"] == 0 for g in opt.param_groups)
    assert all(g["lr"] == pytest.approx(0.256 * 8 / 256) for g in opt.param_groups)  # linear scaling at batch 8


def test_convs_have_fan_in_kaiming_std(parts):
    model = parts[0].raw
    convs = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    for name in ("conv1", "layer1.0.conv2", "layer3.5.conv1", "layer4.0.conv3", "layer4.0.downsample.0"):
        w = convs[name].weight
        fan_in = w[0].numel()  # (in / groups) * k * k
        fan_out = w.shape[0] * w[0, 0].numel()
        assert w.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.06), name
        assert abs(w.std().item() - math.sqrt(2 / fan_out)) > 0.1 * math.sqrt(2 / fan_in), name
    paper = compose_config(["+recipe=resnext101_32x4d_imagenet"])
    assert paper.model.init_mode == "fan_out"  # the paper recipes keep torchvision's / fb.resnet.torch's init
    from resnext.models import build_model

    w = build_model({**dict(paper.model), "depth": 50}).layer1[0].conv2.weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / (w.shape[0] * 9)), rel=0.06)


def test_crop_and_flip_only(cfg):
    aug = AugConfig.of(cfg.data)
    for seed in range(50):
        a = draw(seed, 300, 200, aug)
        assert (a.brightness, a.contrast, a.saturation, a.shift) == (1.0, 1.0, 1.0, (0.0, 0.0, 0.0))
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8))
    data = compose_config([RECIPE, "data.image_size=64"]).data
    transform = TrainTransform(data)
    for seed in range(4):  # the transform's output is crop + resize + mirror + normalize, by hand
        a = draw(seed, 300, 200, AugConfig.of(data))
        ref = img.crop((a.x, a.y, a.x + a.w, a.y + a.h)).resize((64, 64), Image.BILINEAR)
        ref = ref.transpose(Image.FLIP_LEFT_RIGHT) if a.flip else ref
        assert torch.equal(transform(img, seed), F.normalize(F.to_tensor(ref), MEAN, STD))


def test_schedule_is_nvidias_per_epoch_cosine(parts, cfg):
    p, spe = parts[0], 1251  # 1,281,167 images / 1024 per step
    s = Schedule.from_config(cfg.schedule, spe, cfg.trainer.epochs)
    base = p.opt.param_groups[0]["base_lr"] * 1024 / 8  # the recipe's batch: 1.024
    assert base == pytest.approx(1.024)
    for epoch in (0, 1, 7, 8, 9, 45, 89):
        for step in (epoch * spe, epoch * spe + 617, (epoch + 1) * spe - 1):  # constant over the epoch
            assert lr_at(s, base, step) == pytest.approx(nvidia_lr(base, epoch), rel=1e-12, abs=1e-15)
    assert lr_at(s, base, 0) == pytest.approx(base / 8)  # their first epoch already runs at base/8
    # the trainer's schedule is the same object built from the same keys
    assert (p.schedule.granularity, p.schedule.warmup_epochs, p.schedule.name) == ("epoch", 8, "cosine")
    assert p.schedule.factor(3 * p.schedule.steps_per_epoch) == pytest.approx(4 / 8)
    with pytest.raises(ConfigError, match="whole number of epochs"):
        validate(compose_config([RECIPE, "schedule.warmup_epochs=2.5", "data.root=/d"]), 8, True)


def test_label_smoothing_is_nvidias(parts, tmp_path):
    from resnext.engine.logging import RunLog
    from resnext.engine.loop import Trainer

    p, opts, plan = parts
    trainer = Trainer(p, plan, World(0, 0, 1, torch.device("cpu")), tmp_path, RunLog(tmp_path, False, False), opts)
    assert trainer.criterion.label_smoothing == 0.1
    x, y = torch.randn(16, 1000, dtype=torch.float64), torch.randint(0, 1000, (16,))
    assert trainer.criterion(x, y).item() == pytest.approx(nvidia_label_smoothing(x, y, 0.1).item(), rel=1e-12)


def test_fp16_loss_scaling_is_nvidias(tmp_path):
    """The recipe's GradScaler is NVIDIA's (init scale 128, doubling after 100 clean steps, halving on an
    overflow), as session.build_parts hands it to the trainer; and it behaves so on real steps."""
    c = compose_config([RECIPE, "data.backend=synthetic", "data.synthetic_train=8", "data.synthetic_val=8",
                        "data.synthetic_size=32", "data.batch_size=8", "trainer.device=cpu",
                        "trainer.channels_last=false"])
    parts, _, _ = build_parts(c, World(0, 0, 1, torch.device("cpu")), tmp_path, None, RunPlan.of(c, 1))
    scaler = parts.precision.scaler()
    assert parts.precision.name == "fp16" and scaler.is_enabled()
    assert (scaler.get_scale(), scaler.get_growth_interval()) == (128.0, 100)
    assert (scaler.get_growth_factor(), scaler.get_backoff_factor()) == (2.0, 0.5)
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.0)
    for _ in range(100):
        opt.zero_grad()
        scaler.scale(w.sum()).backward()
        scaler.step(opt)
        scaler.update()
    assert scaler.get_scale() == 256.0  # doubled after 100 clean steps
    opt.zero_grad()
    scaler.scale(w.sum() * float("inf")).backward()
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 128.0  # halved on the overflow
    default = compose_config(["data.root=/d"]).trainer  # paper recipes keep PyTorch's GradScaler defaults
    assert (default.loss_scale, default.loss_scale_growth) == (65536.0, 2000)
