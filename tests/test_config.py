"""Every recipe composes, validates and builds; validation rules; the schedule and scaling rule are exact."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from resnext.compose import compose_config, recipes
from resnext.config import ConfigError, validate
from resnext.info import describe
from resnext.models import build_model
from resnext.optim import build_optimizer, scaled_lr
from resnext.schedule import Schedule, lr_at

PAPER_TABLES = {"Table 3", "Table 4", "Table 5", "Table 7", "Fig. 7", "Sec. 5.1 residual ablation"}


def test_recipe_set_covers_the_paper():
    names = set(recipes())
    for depth in (50, 101):
        for cd in ("2x40d", "4x24d", "8x14d", "32x4d"):
            assert f"resnext{depth}_{cd}_imagenet" in names
        assert f"resnet{depth}_imagenet" in names
    for n in ("resnet200_imagenet", "resnet101_1x100d_imagenet", "resnext101_2x64d_imagenet",
              "resnext101_64x4d_imagenet", "resnet50_noshortcut_imagenet", "resnext50_32x4d_noshortcut_imagenet",
              "resnext101_64x4d_320crop_imagenet", "resnext29_8x64d_cifar10", "resnext29_16x64d_cifar10",
              "resnext29_8x64d_cifar100", "resnext29_16x64d_cifar100", "wrn28_10_cifar10", "wrn28_10_cifar100",
              "resnext29_cifar10_fig7"):
        assert n in names


@pytest.mark.parametrize("name", recipes())
def test_recipe_composes_validates_builds(name):
    cfg = compose_config([f"+recipe={name}", "data.root=/data"])
    assert cfg.name == name
    validate(cfg, world_size=8, cuda=True)  # recipes target 8-GPU nodes
    m = OmegaConf.to_container(cfg.model)
    m["num_classes"] = m["num_classes"] or 1000
    with torch.device("meta"):
        model = build_model(m)
    assert sum(p.numel() for p in model.parameters()) > 0
    if cfg.paper.table in PAPER_TABLES - {"Fig. 7"}:
        assert cfg.paper.top1_err is not None


@pytest.mark.parametrize("name,params,gflops", [
    ("resnet50_imagenet", 25.5, 4.1), ("resnext50_32x4d_imagenet", 25.0, 4.2),
    ("resnext29_8x64d_cifar10", 34.4, None), ("resnext29_16x64d_cifar10", 68.1, None),
    ("wrn28_10_cifar10", 36.5, None),
])
def test_info_matches_paper(name, params, gflops):
    cfg = compose_config([f"+recipe={name}"])
    cx, lines = describe(cfg)
    assert cfg.paper.params_m == params
    assert abs(cx.params / 1e6 - params) < 0.06  # the paper truncates 68.155M to 68.1M
    if gflops is not None:
        assert abs(cx.gflops - gflops) < 0.05
    assert any(line.startswith("params") and f"paper: {params}M" in line for line in lines)


def test_recipe_overrides_and_cifar_hparams():
    cfg = compose_config(["+recipe=resnext29_16x64d_cifar10", "optim.lr=0.2", "trainer.epochs=10",
                          "schedule.milestones=[5,8]"])
    assert (cfg.model.cardinality, cfg.model.width, cfg.optim.lr, cfg.trainer.epochs) == (16, 64, 0.2, 10)
    base = compose_config(["+recipe=resnext29_16x64d_cifar10"])
    assert (base.optim.weight_decay, base.optim.nesterov, base.data.batch_size) == (5e-4, True, 128)
    assert list(base.schedule.milestones) == [147, 222] and base.trainer.epochs == 300


CIFAR_RECIPES = ["resnext29_8x64d_cifar10", "resnext29_16x64d_cifar10", "resnext29_8x64d_cifar100",
                 "resnext29_16x64d_cifar100", "resnext29_cifar10_fig7"]


def lua_cifar_lr(epoch: int, epochs: int = 300, lr: float = 0.1) -> float:
    """facebookresearch/ResNeXt train.lua, Trainer:learningRate for cifar10/cifar100 (epoch counted from 1):
    decay 2 when epoch / nEpochs > 0.74, 1 when > 0.49, else 0; lr * 0.1 ^ decay."""
    decay = 2 if epoch / epochs > 0.74 else 1 if epoch / epochs > 0.49 else 0
    return lr * 0.1 ** decay


@pytest.mark.parametrize("name", CIFAR_RECIPES)
def test_cifar_recipes_train_as_the_official_code(name):
    """Against the official code's values: the lr of every one of the 300 epochs (train.lua), BN over 16 images
    (a batch of 128 split over 8 GPUs by DataParallelTable), the classifier bias starting at 0
    (models/resnext.lua), each data set's own statistics (datasets/cifar10.lua, cifar100.lua) and each epoch's
    last partial batch kept (dataloader.lua: ceil(50000 / 128) = 391 batches, the last of 80 images)."""
    from resnext.data.cifar import STATS
    from resnext.data.plan import ShardPlan
    from resnext.plan import RunPlan

    cfg = compose_config([f"+recipe={name}"])
    for world in (1, 8):  # one GPU or the source's eight: the same 391 steps, the last one 80 images
        plan = RunPlan.of(cfg, world)
        shard = ShardPlan(50_000, plan.batch, 0, world, 0, True, plan.last_batch_unit)
        assert (plan.last_batch_unit, shard.steps, shard.last_share * world) == (8, 391, 80)
    s = Schedule.from_config(cfg.schedule, 391, cfg.trainer.epochs)  # ceil(50000 / 128) steps per epoch
    for epoch in range(cfg.trainer.epochs):
        for step in (0, 390):  # an epoch's first and last step: the lr is constant within it
            assert lr_at(s, 0.1, epoch * 391 + step) == pytest.approx(lua_cifar_lr(epoch + 1), rel=1e-12), epoch
    assert cfg.model.bn_batch == 16 == cfg.data.batch_size // 8
    torch.manual_seed(0)
    model = build_model(dict(cfg.model, cardinality=2, width=4))
    assert not model.fc.bias.any() and model.fc.weight.abs().max() > 0
    mean, std = STATS[cfg.data.dataset]
    source = {"cifar10": ((125.3, 123.0, 113.9), (63.0, 62.1, 66.7)),
              "cifar100": ((129.3, 124.1, 112.4), (68.2, 65.4, 70.4))}[cfg.data.dataset]
    assert [round(v * 255, 6) for v in mean] == list(source[0])
    assert [round(v * 255, 6) for v in std] == list(source[1])


def test_the_classifier_bias_is_pytorchs_unless_zeroed():
    torch.manual_seed(0)
    assert build_model("resnext29_8x64d", num_classes=10, cardinality=2, width=4).fc.bias.abs().min() > 0
    assert not build_model("resnext29_8x64d", num_classes=10, cardinality=2, width=4, zero_fc_bias=True).fc.bias.any()


@pytest.mark.parametrize("overrides,world,cuda,key", [
    (["data.batch_size=100"], 8, True, "data.batch_size"),
    (["trainer.precision=fp16"], 1, False, "trainer.precision"),
    (["schedule.milestones=[30,200]"], 1, True, "schedule.milestones"),
    (["schedule.warmup_epochs=200"], 1, True, "schedule.warmup_epochs"),
    (["model.cardinality=0"], 1, True, "model.cardinality"),
    (["trainer.sync_bn=true"], 2, False, "trainer.sync_bn"),
    (["data.backend=dali_gpu"], 1, False, "data.backend"),
    (["data.root=null"], 1, True, "data.root"),
    (["model.num_classes=100"], 1, True, "model.num_classes"),
    (["trainer.precision=half"], 1, True, "trainer.precision"),
    (["trainer.loss_scale=0"], 1, True, "trainer.loss_scale=0.0"),
    (["trainer.loss_scale_growth=0"], 1, True, "trainer.loss_scale_growth=0"),
])
def test_validation_names_the_key(overrides, world, cuda, key):
    recipe = "+recipe=resnext29_8x64d_cifar10" if key == "model.num_classes" else "+recipe=resnext50_32x4d_imagenet"
    cfg = compose_config([recipe, "data.root=/d", *overrides])
    with pytest.raises(ConfigError) as e:
        validate(cfg, world, cuda)
    assert str(e.value).startswith(key) or key in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_recipe_and_key_are_config_errors():
    with pytest.raises(ConfigError, match="available recipes: .*resnext50_32x4d_imagenet"):
        compose_config(["+recipe=resnext50_imagenet_typo"])
    with pytest.raises(ConfigError, match="unknown key optim.lrr; valid keys of optim: name, lr,"):
        compose_config(["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match="trainer.epochs"):
        compose_config(["trainer.epochs=ten"])


def test_linear_scaling_rule_exact():
    assert scaled_lr(0.1, 256, 256) == 0.1
    assert scaled_lr(0.1, 1024, 256) == 0.4
    assert scaled_lr(0.1, 64, 128) == 0.05
    cfg = compose_config(["+recipe=resnext29_16x64d_cifar10", "data.batch_size=64"])
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(cfg.optim, model, cfg.data.batch_size)
    assert opt.param_groups[0]["lr"] == 0.05  # the official README: batch 64 -> lr 0.05
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    assert opt.defaults["foreach"] is None  # PyTorch picks: multi-tensor on GPU, per-tensor on CPU (faster there)
    forced = compose_config(["+recipe=resnext29_16x64d_cifar10", "optim.foreach=true"])
    assert build_optimizer(forced.optim, model, 128).defaults["foreach"] is True


def test_step_schedule_exact_at_warmup_and_milestones():
    s = Schedule("step", steps_per_epoch=100, epochs=100, warmup_epochs=5, warmup_start=0.1,
                 milestones=(30, 60, 90), gamma=0.1)
    assert lr_at(s, 0.4, 0) == pytest.approx(0.04, abs=0, rel=1e-15)
    assert lr_at(s, 0.4, 250) == pytest.approx(0.4 * (0.1 + 0.9 * 0.5), rel=1e-15)
    assert lr_at(s, 0.4, 500) == 0.4  # warmup over
    assert lr_at(s, 0.4, 2999) == 0.4
    assert lr_at(s, 0.4, 3000) == pytest.approx(0.04, rel=1e-15)
    assert lr_at(s, 0.4, 5999) == pytest.approx(0.04, rel=1e-15)
    assert lr_at(s, 0.4, 6000) == pytest.approx(0.004, rel=1e-12)
    assert lr_at(s, 0.4, 9000) == pytest.approx(0.0004, rel=1e-12)


@pytest.mark.parametrize("overrides, message", [
    (["model=nope"], "model option 'nope' does not exist; valid model options: cifar_resnext, preresnet, resnet, resnext, wrn"),
    (["data=foo"], "data option 'foo' does not exist; valid data options: cifar10, cifar100, digits, imagenet"),
    (["trainer.epochs=ten"], "trainer.epochs: Value 'ten' of type 'str' could not be converted to Integer"),
    (["optim.lr=[1"], "no viable alternative at input '[1'"),
])
def test_composition_errors_are_mapped_by_type(overrides, message):
    """Each Hydra/OmegaConf error type becomes one line naming the key or group and the valid options."""
    with pytest.raises(ConfigError) as e:
        compose_config(overrides)
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


def test_user_errors_share_one_base_and_bugs_keep_their_traceback(capsys):
    from resnext.data import DataError
    from resnext.engine.checkpoint import CheckpointError
    from resnext.errors import EXIT_USER_ERROR, UserError, reports_user_errors

    assert all(issubclass(c, UserError) for c in (ConfigError, DataError, CheckpointError))

    @reports_user_errors
    def mistake():
        raise DataError("/data/x: missing; expected a folder")

    @reports_user_errors
    def bug():
        raise ValueError("internal")

    with pytest.raises(SystemExit) as e:
        mistake()
    assert e.value.code == EXIT_USER_ERROR
    assert capsys.readouterr().err == "error: /data/x: missing; expected a folder\n"
    with pytest.raises(ValueError, match="internal"):
        bug()


@pytest.mark.parametrize("tool", ["info", "report"])
def test_output_into_a_closed_pipe_ends_quietly(tool, tmp_path):
    """`python -m resnext.info --keys | head -1` where head has gone: the tool ends with 141 (128 + SIGPIPE,
    as a Unix tool killed by it) and nothing on stderr, not a BrokenPipeError traceback. The reader closes
    before the tool writes, so every write (in main, or the flush at its end) meets the closed pipe."""
    import subprocess
    import sys

    from runs import ROOT, env

    from resnext.errors import EXIT_PIPE_CLOSED

    if tool == "info":
        args = ["resnext.info", "--keys"]
    else:
        run = tmp_path / "run"
        run.mkdir()
        (run / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.to_container(
            compose_config(["+recipe=resnext29_demo_digits"]), resolve=True)))
        args = ["resnext.report", str(run), "--out", str(tmp_path / "rep")]
    p = subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env(), cwd=ROOT)
    p.stdout.close()  # the reader is gone
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == EXIT_PIPE_CLOSED and err == "", err


def test_sgd_is_fused_on_cuda_and_fused_steps_skip_overflows_on_the_device():
    """optim.fused null: the fused kernel on CUDA (GradScaler then passes it the scale and the overflow flag:
    no host read per step, `_step_supports_amp_scaling`), PyTorch's per-tensor loop on CPU. Forced on here
    (CPU has the kernel too): an fp16 step that overflows is skipped with the scale halved, a clean one moves
    the weights as the unfused SGD does (PyTorch's fused SGD leaves its first-step momentum buffers
    uninitialised when that step is skipped: resnext.optim.prime_momentum)."""
    from resnext.optim import use_fused

    assert use_fused(None, torch.device("cuda", 0)) and not use_fused(None, torch.device("cpu"))
    assert use_fused(True, torch.device("cpu")) and not use_fused(False, torch.device("cuda"))
    cfg = compose_config(["+recipe=resnext29_16x64d_cifar10"])
    assert not build_optimizer(cfg.optim, torch.nn.Linear(2, 2), 128).defaults["fused"]
    fused_cfg = compose_config(["+recipe=resnext29_16x64d_cifar10", "optim.fused=true", "optim.foreach=true"])
    torch.manual_seed(0)
    nets = [torch.nn.Linear(4, 3) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    opts = [build_optimizer(c.optim, n, 128) for c, n in ((fused_cfg, nets[0]), (cfg, nets[1]))]
    assert opts[0].defaults["fused"] and opts[0]._step_supports_amp_scaling and not opts[1].defaults["fused"]
    buffers = [opts[0].state[p].get("momentum_buffer") for p in nets[0].parameters()]
    assert all(b is not None and not b.any() for b in buffers) and not opts[1].state  # primed with zeros
    x = torch.randn(8, 4)
    junk = [torch.full_like(p, float("nan")) for p in nets[0].parameters()]  # freed memory holding NaN, that
    del junk  # an uninitialised buffer would likely be carved from
    for big in (1e30, 1.0):  # the first step's gradients overflow the scaled fp16 range
        for net, opt in zip(nets, opts, strict=True):
            scaler = opt.scaler = getattr(opt, "scaler", None) or torch.amp.GradScaler("cpu", init_scale=2.0**16)
            before = net.weight.detach().clone()
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = (net(x) * big).float().pow(2).mean()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if big > 1:
                assert torch.equal(net.weight, before) and scaler.get_scale() == 2.0**15
            else:
                assert not torch.equal(net.weight, before)
    # without zero-primed momentum buffers the fused step after the skipped one read uninitialised memory
    assert torch.allclose(nets[0].weight, nets[1].weight, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("overrides, message", [
    (["recipe=resnext29_demo_digits"], "recipe=resnext29_demo_digits: a recipe is added to the configuration, not "
                                       "overridden: write +recipe=resnext29_demo_digits (with the plus)"),
    (["+recipe=resnext29_demo_digits", "schedule=step", "trainer.epochs=10", "schedule.warmup_epochs=0"],
     "schedule.milestones=[30, 60, 90] must be increasing epochs in (0, trainer.epochs=10]; give milestones "
     "within the run (e.g. schedule.milestones=[3, 6, 9]) or use schedule=cosine"),
    (["+recipe=resnext29_demo_digits", "schedule=step", "trainer.epochs=2", "schedule.warmup_epochs=0"],
     "schedule.milestones=[30, 60, 90] must be increasing epochs in (0, trainer.epochs=2]; give milestones "
     "within the run (e.g. schedule.milestones=[1, 2]) or use schedule=cosine"),  # the suggestion itself valid
])
def test_newcomers_mistakes_name_the_fix(overrides, message):
    from resnext.config import validate

    with pytest.raises(ConfigError) as e:
        validate(compose_config(overrides), 1, False)
    assert str(e.value) == message


@pytest.mark.parametrize("overrides,classes", [(["+recipe=resnext29_16x64d_cifar100", "model.num_classes=0"], 100),
                                               (["+recipe=resnext29_demo_digits", "model.num_classes=0"], 10),
                                               (["model.num_classes=0"], 1000), (["model.num_classes=7"], 7)])
def test_info_counts_the_classifier_a_config_implies(overrides, classes):
    """model.num_classes=0 ("from the data") is read as the data set's known count before any data is open
    (CIFAR-100 100, digits 10, a folder ImageNet's 1000), in resnext.info as in resnext.report."""
    from resnext.info import describe

    cx, lines = describe(compose_config(overrides))
    assert f", {classes} classes, " in lines[0]


def test_info_prints_each_data_sets_own_statistics(tmp_path):
    """`resnext.info` shows the normalisation a recipe trains with; CIFAR-100 loaders use CIFAR-100's own."""
    from cifar_helpers import write_cifar100
    from imagenet_data_helpers import loaders_for

    from resnext.data import Placement

    _, lines = describe(compose_config(["+recipe=resnext29_16x64d_cifar100"]))
    assert "input    cifar100: mean 129.3, 124.1, 112.4, std 68.2, 65.4, 70.4 (RGB, 0-255 scale)" in lines
    _, lines = describe(compose_config(["+recipe=resnext29_16x64d_cifar10"]))
    assert "input    cifar10: mean 125.3, 123.0, 113.9, std 63.0, 62.1, 66.7 (RGB, 0-255 scale)" in lines
    root = write_cifar100(tmp_path)
    cfg = compose_config(["+recipe=resnext29_16x64d_cifar100", f"data.root={root}", "data.batch_size=4"])
    val = loaders_for(cfg.data, Placement(0, 1, torch.device("cpu"), torch.float32, False, 0, 0, 0)).val
    x, _ = next(iter(val))
    from resnext.data.cifar import load_cifar

    raw = load_cifar(str(root), "cifar100")[2][:4].float()
    mean = torch.tensor([129.3, 124.1, 112.4]).view(1, 3, 1, 1)
    std = torch.tensor([68.2, 65.4, 70.4]).view(1, 3, 1, 1)
    assert torch.allclose(x, (raw - mean) / std, atol=1e-5)
