"""The paper's 8-GPU run on any number of processes: ghost BN, gradient accumulation, elastic resume."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import time

import pytest
import torch
from runs import ROOT, TINY, TORCHRUN, env, records, train, weights
from torch import nn

from resnext.compose import compose_config
from resnext.config import micro_batches
from resnext.engine.precision import Precision
from resnext.engine.step import train_step
from resnext.errors import ConfigError
from resnext.models.ghost_bn import GhostBatchNorm2d, convert_ghost_bn

# random crops on: their draws are the global batch's, whatever the world size
SAME = ["data.pad=2", "data.batch_size=32", "trainer.eval_every=1", "optim.lr=0.02"]  # lr: a stable trajectory


def params(run_dir, name="last.pt") -> dict[str, torch.Tensor]:
    """The trained parameters (BN running statistics left out: DDP broadcasts rank 0's every step, while
    one process updates them from every micro-batch; training never reads them)."""
    return {k: v for k, v in weights(run_dir, name).items() if "running_" not in k and "num_batches" not in k}


def test_ghost_bn_equals_bn_on_each_group():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(6).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    ghost = convert_ghost_bn(copy.deepcopy(bn), 4)
    assert isinstance(ghost, GhostBatchNorm2d) and ghost.state_dict().keys() == bn.state_dict().keys()
    x = torch.randn(12, 6, 5, 3, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y = ghost(x)
    parts, copies = [], [copy.deepcopy(bn) for _ in range(3)]
    for i, b in enumerate(copies):
        parts.append(b(x2[4 * i:4 * (i + 1)]))
    ref = torch.cat(parts)
    assert torch.allclose(y, ref, atol=1e-12)
    (y * torch.arange(y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
    (ref * torch.arange(ref.numel(), dtype=ref.dtype).view_as(ref)).sum().backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-10)
    assert torch.allclose(ghost.weight.grad, sum(b.weight.grad for b in copies), atol=1e-10)
    # running statistics: the mean of the groups' updates; evaluation is plain BN
    assert torch.allclose(ghost.running_mean, torch.stack([b.running_mean for b in copies]).mean(0))
    assert torch.allclose(ghost.running_var, torch.stack([b.running_var for b in copies]).mean(0))
    ghost.eval()
    bn.load_state_dict(ghost.state_dict())
    bn.eval()
    assert torch.equal(ghost(x.detach()), bn(x.detach()))


def test_ghost_bn_keeps_channels_last_and_runs_under_autocast():
    ghost = convert_ghost_bn(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)), 2)
    ghost = ghost.to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 9, 9).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ghost(x)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="does not split into BN groups of 2"):
        ghost(torch.randn(7, 3, 9, 9))


def test_accumulated_step_equals_one_step_with_the_same_bn_groups():
    """Two micro-batches of 8 == one batch of 16 whose BN is computed over groups of 8."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5))
    ghost = convert_ghost_bn(copy.deepcopy(net), 8)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 5, (16,))
    prec = Precision("fp32", "cpu", False)
    results = []
    for model, micro in ((ghost, 1), (net, 2)):
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        loss, logits = train_step(model, x, y, opt, prec.scaler(), prec, nn.CrossEntropyLoss(), micro)
        results.append((loss, logits, [p.detach().clone() for p in model.parameters()]))
    (l1, o1, p1), (l2, o2, p2) = results
    assert torch.allclose(l1, l2, atol=1e-6) and torch.allclose(o1, o2, atol=1e-5) and o2.shape == (16, 5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(p1, p2, strict=True))


@pytest.mark.parametrize("overrides, world, expect", [
    (["trainer.accumulate=8"], 1, 8),
    (["trainer.accumulate=auto", "trainer.max_micro_batch=32"], 1, 8),
    (["trainer.accumulate=auto", "trainer.max_micro_batch=40"], 2, 4),
    (["trainer.accumulate=auto", "trainer.max_micro_batch=256"], 1, 1),
])
def test_micro_batches(overrides, world, expect):
    cfg = compose_config(["+recipe=resnext50_32x4d_imagenet", "data.root=/d", *overrides])
    assert micro_batches(cfg, world) == expect
    assert cfg.model.bn_batch == 32 and cfg.data.batch_size == 256  # the paper's BN batch and global batch


def test_every_paper_imagenet_recipe_keeps_the_bn_batch_of_32(repo_root):
    names = sorted(p.stem for p in (repo_root / "recipes").glob("*_imagenet.yaml"))
    assert len(names) == 17
    for name in names:
        cfg = compose_config([f"+recipe={name}", "data.root=/d"])
        assert cfg.model.bn_batch == 32, name
        assert cfg.data.batch_size // 8 == 32, name  # so 8 GPUs without ghost BN compute the same


@pytest.mark.parametrize("overrides, message", [
    (["trainer.accumulate=3"], "trainer.accumulate=3 does not divide the per-process batch 256"),
    (["trainer.accumulate=two"], "trainer.accumulate='two' is not valid"),
    (["trainer.accumulate=auto"], "trainer.accumulate=auto needs trainer.max_micro_batch >= 1"),
    (["trainer.accumulate=2", "model.bn_batch=48"], "model.bn_batch=48 does not divide the micro-batch of 128"),
])
def test_micro_batch_mistakes_are_one_line(overrides, message):
    from resnext.config import validate

    cfg = compose_config(["+recipe=resnext50_32x4d_imagenet", "data.root=/d", *overrides])
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate(cfg, 1, False)


def test_one_process_with_accumulation_says_how_it_batches(tmp_path):
    res = train(tmp_path / "r", *SAME, "trainer.epochs=1", "trainer.max_steps_per_epoch=1", "trainer.accumulate=2",
                "model.bn_batch=16")
    assert res.returncode == 0, res.stderr
    assert "batch 32 = 1 process(es) x 2 micro-batch(es) x 16, BN over 16 images" in res.stdout


@pytest.mark.slow
def test_two_processes_equal_one_with_accumulation_or_ghost_bn(tmp_path):
    """2 x 16 images (DDP) == 1 process x 2 micro-batches of 16 (bit for bit: the same sums in the same
    order) ~= 1 process x 32 images with BN over groups of 16 (ghost BN's own float32 statistics: one step
    is compared, since later steps amplify rounding); BN over all 32 is the control that must differ."""
    run = [*SAME, "trainer.epochs=1", "trainer.max_steps_per_epoch=1"]
    runs = {"ddp": ([], 2), "acc": (["trainer.accumulate=2"], 1), "ghost": (["model.bn_batch=16"], 1),
            "plain": ([], 1)}
    got = {}
    for name, (extra, nproc) in runs.items():
        res = train(tmp_path / name, *run, *extra, nproc=nproc)
        assert res.returncode == 0, res.stderr
        got[name] = params(tmp_path / name)
    ref = got["ddp"]
    assert all(torch.equal(got["acc"][k], ref[k]) for k in ref)
    start = {k: v for k, v in params_at_init(tmp_path).items() if k in ref}
    moved = max((ref[k] - start[k]).abs().max().item() for k in ref)
    ghost = max((got["ghost"][k] - ref[k]).abs().max().item() for k in ref)
    plain = max((got["plain"][k] - ref[k]).abs().max().item() for k in ref)
    assert ghost < 1e-4 * moved < plain, (ghost, moved, plain)


def params_at_init(tmp_path, *extra: str) -> dict[str, torch.Tensor]:
    from resnext.models import build_model
    from resnext.session import model_record

    cfg = compose_config([*TINY, *SAME, *extra])
    torch.manual_seed(cfg.trainer.seed)
    return dict(build_model(model_record(cfg, 10)).state_dict())


@pytest.mark.slow
def test_stopped_on_two_processes_resumes_on_one(tmp_path):
    run = [*SAME, "trainer.epochs=2", "trainer.max_steps_per_epoch=6"]
    straight = train(tmp_path / "straight", *run, nproc=2)
    assert straight.returncode == 0, straight.stderr
    d = tmp_path / "moved"
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node=2", str(ROOT / "train.py"), *TINY,
           f"hydra.run.dir={d}", *run]
    proc = subprocess.Popen(cmd, env=env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    end = time.time() + 240
    while time.time() < end and proc.poll() is None:
        try:
            if any(r.get("step", 0) >= 3 for r in records(d, "step")):
                break
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=120)
    saved = torch.load(d / "checkpoints" / "last.pt", weights_only=True)
    assert saved["world_size"] == 2 and 3 <= saved["progress"]["global_step"] < 12
    resumed = train(d, *run, "trainer.accumulate=2")  # one process now
    assert resumed.returncode == 0, resumed.stderr
    assert "world size changed from 2 to 1 processes" in resumed.stdout
    a, b = params(d), params(tmp_path / "straight")  # same sums in the same order: bit for bit
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    epochs = {r["epoch"]: r for r in records(d, "epoch")}
    ref = {r["epoch"]: r for r in records(tmp_path / "straight", "epoch")}
    assert abs(epochs[0]["train_loss"] - ref[0]["train_loss"]) < 1e-4  # the epoch's sums moved with the run


@pytest.mark.slow
def test_accumulation_on_any_number_of_processes(tmp_path):
    """The global batch of 32 as 1 process x 4 micro-batches, 2 x 2 and 4 x 1 (DDP with no_sync on all but
    the last micro-batch; this combination crashed on its first step while DDP used static_graph=True):
    the same BN groups of 8 and the same gradient, summed in other orders. 1 x 4 and 2 x 2 add the four
    micro-batch gradients as (a/4 + b/4) + (c/4 + d/4) ... against DDP's all-reduce of per-rank means, so
    they agree to float32 rounding only: compared after 3 steps against how far the weights moved, with
    BN over all 32 images (another model) as the control that must differ by far more. Compiled (inductor,
    DDP under torch.compile: about 100 s of compiling on 2 cores) its kernels fuse and reorder float32 sums:
    a looser bound, still far below the control."""
    run = [*SAME, "trainer.epochs=1", "trainer.max_steps_per_epoch=3"]
    runs = {"1x4": (["trainer.accumulate=4"], 1), "2x2": (["trainer.accumulate=2"], 2), "4x1": ([], 4),
            "plain": ([], 1), "2x2 compiled": (["trainer.accumulate=2", "trainer.compile=true"], 2)}
    got = {}
    for name, (extra, nproc) in runs.items():
        res = train(tmp_path / name, *run, *extra, nproc=nproc)
        assert res.returncode == 0, res.stderr[-2000:]
        got[name] = params(tmp_path / name)
        assert [r["step"] for r in records(tmp_path / name, "epoch")] == [3]
    ref = got["4x1"]
    start = {k: v for k, v in params_at_init(tmp_path).items() if k in ref}
    moved = max((ref[k] - start[k]).abs().max().item() for k in ref)
    plain = max((got["plain"][k] - ref[k]).abs().max().item() for k in ref)
    for name, tolerance in (("1x4", 1e-4), ("2x2", 1e-4), ("2x2 compiled", 2e-3)):
        diff = max((got[name][k] - ref[k]).abs().max().item() for k in ref)
        assert diff < tolerance * moved < plain, (name, diff, moved, plain)


@pytest.mark.parametrize("fmt", [torch.channels_last, torch.contiguous_format])
def test_ghost_bn_keeps_the_activation_memory_of_plain_bn(fmt):
    """ResNeXt-50's bottleneck stack at batch 64 in bf16 autocast, BN over groups of 16 vs over the batch:
    autograd keeps about what plain BN keeps (it kept 3.7x when the statistics were composed from
    elementwise operations), and the outputs agree with BN applied group by group."""
    from resnext.models import build_model
    from resnext.models.complexity import saved_activation_bytes

    torch.manual_seed(0)
    plain = build_model("resnext50_32x4d", num_classes=10).to(memory_format=fmt)
    ghost = convert_ghost_bn(copy.deepcopy(plain), 16)
    x = torch.randn(64, 3, 32, 32).contiguous(memory_format=fmt)
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    base, grouped = saved_activation_bytes(plain, x, bf16), saved_activation_bytes(ghost, x, bf16)
    assert base > 10e6 and grouped <= 1.05 * base, (grouped / base)
    with torch.no_grad():
        y = ghost.train()(x[:32])
        ref = torch.cat([copy.deepcopy(plain).train()(x[i:i + 16]) for i in (0, 16)])
    assert torch.allclose(y, ref, atol=1e-4, rtol=1e-4)


def test_ghost_bn_running_statistics_and_layouts_match_group_by_group_bn():
    """Channels-last and contiguous inputs, float64: outputs, gradients and the running statistics
    (the mean of the groups' unbiased statistics) equal per-group BatchNorm2d; the output keeps the layout."""
    torch.manual_seed(1)
    for fmt in (torch.channels_last, torch.contiguous_format):
        bn = nn.BatchNorm2d(5).double()
        ghost = convert_ghost_bn(copy.deepcopy(bn), 3)
        x = torch.randn(9, 5, 4, 6, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
        y = ghost(x)
        assert y.is_contiguous(memory_format=fmt)
        copies = [copy.deepcopy(bn) for _ in range(3)]
        ref = torch.cat([b(x[3 * i:3 * i + 3]) for i, b in enumerate(copies)])
        assert torch.allclose(y, ref, atol=1e-12)
        gy = torch.randn_like(y)
        gx, = torch.autograd.grad(y, x, gy)
        rx, = torch.autograd.grad(ref, x, gy)
        assert torch.allclose(gx, rx, atol=1e-10)
        assert torch.allclose(ghost.running_var, torch.stack([b.running_var for b in copies]).mean(0), atol=1e-12)
        assert int(ghost.num_batches_tracked) == 1


def test_ghost_bn_compiled_form_equals_the_eager_one(monkeypatch):
    """Under torch.compile the groups' outputs are concatenated (inductor fuses it) instead of written in place
    by the eager autograd Function: both forms give the same outputs, gradients and running statistics."""
    torch.manual_seed(3)
    bn = nn.BatchNorm2d(4).double()
    results = []
    for compiling in (False, True):
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda c=compiling: c)
        ghost = convert_ghost_bn(copy.deepcopy(bn), 2)
        x = torch.randn(6, 4, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
        y = ghost(x)
        gx, gw = torch.autograd.grad(y, [x, ghost.weight], torch.ones_like(y) + x.detach())
        results.append((y, gx, gw, ghost.running_mean.clone(), ghost.running_var.clone()))
    for a, b in zip(*results, strict=True):
        assert torch.allclose(a, b, atol=1e-12)


def test_a_partial_batch_splits_into_as_many_bn_groups_as_a_full_one():
    """data.keep_last_batch's last step: a batch of 80 where a full one is 128 in groups of 16 is BN over 8
    groups of 10 (the source's 8 GPUs took 10 each), and the groups come back to 16 afterwards."""
    from resnext.models.ghost_bn import groups_of_a_partial_batch

    torch.manual_seed(0)
    model = convert_ghost_bn(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).double(), 16)
    x = torch.randn(80, 3, 2, 2, dtype=torch.float64)
    plain = copy.deepcopy(model)
    with groups_of_a_partial_batch(model, 80, 128):
        assert model[1].group == 10
        y = model(x)
    assert model[1].group == 16
    with torch.no_grad():
        h = plain[0](x)
        want = torch.cat([nn.functional.batch_norm(p, None, None, plain[1].weight, plain[1].bias, True)
                          for p in h.split(10)])
    assert torch.allclose(y, want, atol=1e-12)
    with groups_of_a_partial_batch(model, 128, 128):  # a full batch: untouched
        assert model[1].group == 16


@pytest.mark.slow
def test_kept_last_batch_on_two_processes_equals_one(tmp_path):
    """data.keep_last_batch with ghost BN, the epoch's partial step included (digits: 1437 training images at
    batch 512 = 2 full steps and 413 left, kept as 384 = 32 BN groups of 12): 2 processes x 192 train bit for
    bit what 1 process x 2 micro-batches of 192 trains (the same sums in the same order; 1 x 384 agrees to
    rounding only, which three steps amplify past any useful bound); dropping the partial step is the
    control that must differ. Mixup/CutMix and stochastic depth are on (a superset of the plain run: the
    partial step mixes within its groups of 12 and draws per position as the full ones do)."""
    small = ["model.depth=11", "data.image_size=8", "data.pad=1"]  # 3 blocks on 8 px: the same batches, faster
    run = [*SAME, *small, "data.batch_size=512", "model.bn_batch=16", "trainer.epochs=1", "data.mixup_alpha=0.2",
           "data.cutmix_alpha=1.0", "model.drop_path=0.2"]
    runs = {"two": (["data.keep_last_batch=true"], 2), "acc": (["data.keep_last_batch=true", "trainer.accumulate=2"], 1),
            "dropped": (["trainer.accumulate=2"], 1)}
    got = {}
    for name, (extra, nproc) in runs.items():
        res = train(tmp_path / name, *run, *extra, nproc=nproc)
        assert res.returncode == 0, res.stderr[-2000:]
        got[name] = params(tmp_path / name)
    steps = {name: [r["step"] for r in records(tmp_path / name, "epoch")] for name in runs}
    assert steps == {"two": [3], "acc": [3], "dropped": [2]}
    ref = got["two"]
    assert all(torch.equal(got["acc"][k], ref[k]) for k in ref)
    start = {k: v for k, v in params_at_init(tmp_path, *small).items() if k in ref}
    moved = max((ref[k] - start[k]).abs().max().item() for k in ref)
    dropped = max((got["dropped"][k] - ref[k]).abs().max().item() for k in ref)
    assert dropped > 0.05 * moved, (dropped, moved)


def test_running_statistics_from_the_steps_first_group_only():
    """model.bn_stats=first: a step of 2 micro-batches x 2 groups updates the running statistics once, from
    the first 4 images (a BatchNorm2d fed those alone); mean (the default) takes every group's, each pass.
    The training output is the same either way."""
    torch.manual_seed(0)
    bn = nn.Sequential(nn.Conv2d(3, 5, 1), nn.BatchNorm2d(5)).double()
    x, y = torch.randn(16, 3, 3, 3, dtype=torch.float64), torch.randint(0, 5, (16,))
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    precision = Precision("fp32", "cpu", False)
    models = {}
    for name in ("first", "mean"):
        model = nn.Sequential(convert_ghost_bn(copy.deepcopy(bn), 4, first_only=name == "first"), head)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)  # statistics only: the weights stay
        train_step(model, x, y, opt, precision.scaler(), precision, nn.CrossEntropyLoss(), micro=2)
        models[name] = model[0][1]
    want = copy.deepcopy(bn).train()
    want(x[:4])
    first = models["first"]
    assert int(first.num_batches_tracked) == 1
    assert torch.allclose(first.running_mean, want[1].running_mean, atol=1e-12)
    assert torch.allclose(first.running_var, want[1].running_var, atol=1e-12)
    assert int(models["mean"].num_batches_tracked) == 2  # one update per pass
    assert not torch.allclose(models["mean"].running_mean, first.running_mean)
    assert not first.frozen  # the later micro-batch's freeze is lifted after the step


def test_bn_stats_first_without_bn_groups_is_one_line():
    with pytest.raises(ConfigError, match="^model.bn_stats=first takes the running statistics from the first BN "
                                          "group of a step; set model.bn_batch"):
        from resnext.config import validate

        validate(compose_config(["+recipe=resnext29_demo_digits", "model.bn_stats=first"]))


ALL_ON = ["data.mixup_alpha=0.2", "data.cutmix_alpha=1.0", "trainer.ema_decay=0.9", "optim.clip_grad_norm=1.0",
          "optim.name=adamw", "optim.lr=0.001", "optim.weight_decay=0.05", "model.bn_batch=16", "model.drop_path=0.2",
          "data.repeated_aug=2"]


@pytest.mark.slow
def test_methods_beyond_the_paper_keep_the_world_size_invariance(tmp_path):
    """Mixup, CutMix, EMA, clipping, AdamW, stochastic depth and repeated augmentation on: 2 processes x 16
    train bit for bit what 1 process x 2 micro-batches of 16 trains (mixing and depth draws per step and
    position, copies dealt to BN groups, partners within
    BN groups); model and EMA compared."""
    run = [*SAME, *ALL_ON, "trainer.epochs=1", "trainer.max_steps_per_epoch=3"]
    for name, extra, nproc in (("ddp", [], 2), ("acc", ["trainer.accumulate=2"], 1)):
        res = train(tmp_path / name, *run, *extra, nproc=nproc)
        assert res.returncode == 0, res.stderr[-2000:]
    a, b = (torch.load(tmp_path / n / "checkpoints" / "last.pt", weights_only=True) for n in ("ddp", "acc"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in params(tmp_path / "ddp"))
    ema = [k for k in a["ema"]["module"] if "running_" not in k and "num_batches" not in k]
    assert ema and all(torch.equal(a["ema"]["module"][k], b["ema"]["module"][k]) for k in ema)


@pytest.mark.slow
def test_methods_beyond_the_paper_resume_exactly(tmp_path):
    """All of them on: stopped after one epoch and resumed, the run ends bit for bit as the uninterrupted one,
    its EMA (updated every 2 steps: steps 2, 4, 6) included; each evaluation reports the EMA's errors too."""
    run = [*SAME, *ALL_ON, "trainer.ema_every=2", "trainer.max_steps_per_epoch=3"]
    assert train(tmp_path / "straight", *run, "trainer.epochs=2").returncode == 0
    assert train(tmp_path / "resumed", *run, "trainer.epochs=1").returncode == 0
    res = train(tmp_path / "resumed", *run, "trainer.epochs=2")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "EMA top-1 error" in res.stdout
    assert all(r["val_ema_top1_err"] is not None for r in records(tmp_path / "resumed", "epoch"))
    a, b = (torch.load(tmp_path / n / "checkpoints" / "last.pt", weights_only=True) for n in ("straight", "resumed"))
    assert a["ema"]["updates"] == b["ema"]["updates"] == 3
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["ema"]["module"][k], b["ema"]["module"][k]) for k in a["ema"]["module"])
