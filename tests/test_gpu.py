"""The CUDA path (skipped without a GPU): precisions x layouts, compile, fp16 overflow, device moves of a run,
ghost BN, and two processes sharing one GPU over gloo."""

from __future__ import annotations

import copy

import pytest
import torch
from runs import records, train, weights
from torch import nn

from resnext.engine.dist import backend_for
from resnext.engine.precision import Precision
from resnext.engine.step import train_step
from resnext.models import build_model
from resnext.models.ghost_bn import convert_ghost_bn
from resnext.optim import prime_momentum

CUDA = torch.device("cuda", 0)


def test_processes_sharing_a_gpu_use_gloo():  # runs everywhere: the rule the two-process GPU test relies on
    assert backend_for(torch.device("cuda", 0), 8, 8) == "nccl"
    assert backend_for(torch.device("cuda", 0), 2, 1) == "gloo"
    assert backend_for(torch.device("cpu"), 2, 0) == "gloo"


def tiny(classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return build_model("resnext29_8x64d", num_classes=classes, cardinality=2, width=4)


def batch(n: int = 32, size: int = 32):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


def sgd(model: nn.Module, fused: bool | None = None) -> torch.optim.SGD:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, fused=fused)
    prime_momentum(opt)
    return opt


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_every_precision_and_layout_trains(precision, channels_last):
    """Twelve steps on one batch: finite losses that fall, on the GPU, in the one precision path."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = tiny().to(CUDA, memory_format=fmt)
    prec = Precision(precision, "cuda", channels_last)
    opt, scaler = sgd(model, fused=True), prec.scaler()
    x, y = (t.to(CUDA) for t in batch())
    x = x.contiguous(memory_format=fmt)
    losses = [float(train_step(model, x, y, opt, scaler, prec, nn.CrossEntropyLoss())[0].detach()) for _ in range(12)]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.85 * losses[0], losses


@pytest.mark.gpu
def test_compiled_step_follows_the_eager_one():
    x, y = (t.to(CUDA) for t in batch())
    prec = Precision("fp32", "cuda", True)
    out = []
    for compiled in (False, True):
        model = tiny().to(CUDA, memory_format=torch.channels_last)
        opt = sgd(model)
        step_model = torch.compile(model) if compiled else model
        losses = [float(train_step(step_model, x, y, opt, prec.scaler(), prec, nn.CrossEntropyLoss())[0])
                  for _ in range(3)]
        out.append((losses, [p.detach().float().cpu() for p in model.parameters()]))
    (le, pe), (lc, pc) = out
    # the first loss is one forward (float32 rounding apart); updates on 32 random images amplify it
    assert lc[0] == pytest.approx(le[0], rel=1e-4) and lc == pytest.approx(le, rel=1e-2)
    assert max((a - b).abs().max().item() for a, b in zip(pe, pc, strict=True)) < 1e-2


@pytest.mark.gpu
def test_fp16_overflow_skips_the_step_on_the_device():
    """An overflowing fp16 step leaves the weights and the (primed) momentum as they were and halves the
    scale; the fused SGD's next clean step matches the unfused one."""
    x, y = (t.to(CUDA) for t in batch())
    prec = Precision("fp16", "cuda", True, loss_scale=2.0**16)
    results = []
    for fused in (True, False):
        model = tiny().to(CUDA, memory_format=torch.channels_last)
        opt, scaler = sgd(model, fused=fused), prec.scaler()
        before = [p.detach().clone() for p in model.parameters()]
        train_step(model, x * 1e6, y, opt, scaler, prec, nn.CrossEntropyLoss())  # inf in fp16: skipped
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
        assert scaler.get_scale() == 2.0**15
        train_step(model, x, y, opt, scaler, prec, nn.CrossEntropyLoss())
        results.append([p.detach().float() for p in model.parameters()])
    assert max((a - b).abs().max().item() for a, b in zip(*results, strict=True)) < 1e-4


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ghost_bn_equals_bn_on_each_group_on_cuda(dtype):
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(16).to(CUDA)
    ghost = convert_ghost_bn(copy.deepcopy(bn), 8)
    x = torch.randn(32, 16, 7, 7, device=CUDA).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        y = ghost(x)
        ref = torch.cat([copy.deepcopy(bn)(x[i:i + 8]) for i in range(0, 32, 8)])
    assert y.is_contiguous(memory_format=torch.channels_last)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert torch.allclose(y.float(), ref.float(), atol=tol, rtol=tol)


@pytest.mark.gpu
def test_a_gpu_run_resumes_on_the_cpu_and_back(tmp_path):
    d = tmp_path / "r"
    first = train(d, "trainer.device=cuda", "trainer.epochs=1", "trainer.max_steps_per_epoch=3")
    assert first.returncode == 0, first.stderr[-2000:]
    on_cpu = train(d, "trainer.device=cpu", "trainer.epochs=2", "trainer.max_steps_per_epoch=3")
    assert on_cpu.returncode == 0, on_cpu.stderr[-2000:]
    back = train(d, "trainer.device=cuda", "trainer.epochs=3", "trainer.max_steps_per_epoch=3")
    assert back.returncode == 0, back.stderr[-2000:]
    assert [r["step"] for r in records(d, "epoch")] == [3, 6, 9]
    assert [r["device"] for r in records(d, "start")] == ["cuda", "cpu", "cuda"]
    assert all(torch.isfinite(v).all() for v in weights(d).values() if v.is_floating_point())


@pytest.mark.gpu
@pytest.mark.slow
def test_two_processes_on_one_gpu_equal_one_process(tmp_path):
    """DDP over gloo with both ranks on GPU 0 and SyncBatchNorm: 2 x 32 images with BN synced over the ranks
    equal one process with 64 (float32 rounding: other reduction orders). With 2 micro-batches per rank too
    (no_sync on the first), where a synced statistic covers both ranks' first (then second) 16 images: it
    trains its 3 steps to finite weights near the unaccumulated run (the same gradient, BN over other groups)."""
    run = ["trainer.device=cuda", "trainer.precision=fp32", "trainer.epochs=1", "trainer.max_steps_per_epoch=3",
           "data.batch_size=64", "optim.lr=0.02"]
    for name, extra, nproc in (("two", ["trainer.sync_bn=true"], 2), ("one", [], 1),
                               ("two_acc", ["trainer.sync_bn=true", "trainer.accumulate=2"], 2)):
        res = train(tmp_path / name, *run, *extra, nproc=nproc)
        assert res.returncode == 0, res.stderr[-3000:]
        assert [r["step"] for r in records(tmp_path / name, "epoch")] == [3]
    a, b, c = (weights(tmp_path / n) for n in ("two", "one", "two_acc"))
    start = dict(tiny_start())
    keys = [k for k in a if "running_" not in k and "num_batches" not in k]
    moved = max((b[k] - start[k]).abs().max().item() for k in keys)
    assert max((a[k] - b[k]).abs().max().item() for k in keys) < 1e-4 * max(moved, 1e-3)
    assert all(torch.isfinite(c[k]).all() for k in keys)
    assert max((c[k] - b[k]).abs().max().item() for k in keys) < moved


def tiny_start() -> dict:
    """The digits recipe's initial weights (runs.TINY), as every rank builds them."""
    from runs import TINY

    from resnext.compose import compose_config
    from resnext.session import model_record

    cfg = compose_config([*TINY])
    torch.manual_seed(cfg.trainer.seed)
    return build_model(model_record(cfg, 10)).state_dict()
