"""Methods beyond the paper (off in every paper recipe: tests/test_recipe_golden.py), each against the
ecosystem's own implementation as the oracle."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnext.compose import compose_config
from resnext.config import validate
from resnext.engine.loop import train_step
from resnext.engine.precision import Precision
from resnext.errors import ConfigError
from resnext.models import build_model
from resnext.optim import build_optimizer


def tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("resnext29_8x64d", num_classes=10, cardinality=2, width=2)


def batch(seed: int = 1, n: int = 8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_gradient_clipping_is_clip_grad_norm_on_the_true_gradient(precision):
    """optim.clip_grad_norm: the step is PyTorch's documented recipe (fp16: scaler.scale(loss).backward(),
    scaler.unscale_, clip_grad_norm_ on the true gradient, scaler.step), bit for bit; the clip binds here."""
    x, y = batch()
    model, ref = tiny(), tiny()
    cfg = compose_config(["+recipe=resnext29_demo_digits", "optim.clip_grad_norm=0.5", "optim.fused=false"]).optim
    prec = Precision(precision, "cpu", False)
    opt = build_optimizer(cfg, model, 32)
    train_step(model, x, y, opt, prec.scaler(), prec, nn.CrossEntropyLoss(), clip=0.5)
    ref_opt = build_optimizer(cfg, ref, 32)
    scaler = torch.amp.GradScaler("cpu", enabled=precision == "fp16")
    with torch.autocast("cpu", dtype=torch.float16, enabled=precision == "fp16"):
        loss = nn.CrossEntropyLoss()(ref(x).float(), y)
    scaler.scale(loss).backward()
    scaler.unscale_(ref_opt)
    norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
    scaler.step(ref_opt)
    assert norm > 1.0  # the clip changed the step
    for (k, a), b in zip(model.state_dict().items(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_adamw_is_torchs_with_the_recipes_lr_and_decay_groups():
    """optim.name=adamw: torch.optim.AdamW with the linearly scaled lr, betas and eps, and weight decay only
    where optim.no_decay leaves it; a trainer step equals the optimizer's own step."""
    cfg = compose_config(["+recipe=resnext29_demo_digits", "optim.name=adamw", "optim.lr=0.001",
                          "optim.ref_batch=256", "optim.weight_decay=0.05", "optim.no_decay=bn_and_bias",
                          "optim.betas=[0.8,0.99]", "optim.eps=1e-7", "optim.fused=false"]).optim
    model, ref = tiny(), tiny()
    opt = build_optimizer(cfg, model, 512)
    assert isinstance(opt, torch.optim.AdamW)
    assert {g["lr"] for g in opt.param_groups} == {0.002} and opt.defaults["betas"] == (0.8, 0.99)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.05 for p in g["params"]}
    assert decayed == {id(m.weight) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)}
    x, y = batch()
    prec = Precision("fp32", "cpu", False)
    train_step(model, x, y, opt, prec.scaler(), prec, nn.CrossEntropyLoss())
    ref_groups = [{"params": [dict(ref.named_parameters())[n] for n, p in model.named_parameters()
                              if any(p is q for q in g["params"])], "weight_decay": g["weight_decay"]}
                  for g in opt.param_groups]
    ref_opt = torch.optim.AdamW(ref_groups, lr=0.002, betas=(0.8, 0.99), eps=1e-7)
    nn.CrossEntropyLoss()(ref(x), y).backward()
    ref_opt.step()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values(), strict=True))


@pytest.mark.parametrize("override, message", [
    ("optim.clip_grad_norm=-1", "optim.clip_grad_norm=-1.0 must be >= 0 (0 = no clipping)"),
    ("optim.betas=[0.9]", "optim.betas=[0.9] must be two factors in [0, 1)"),
    ("optim.name=lamb", "optim.name='lamb' is not valid; choose one of sgd, adamw"),
])
def test_bad_values_are_one_line(override, message):
    with pytest.raises(ConfigError, match=f"^{message.replace('[', '.').replace(']', '.').replace('(', '.').replace(')', '.')}"):
        validate(compose_config(["+recipe=resnext29_demo_digits", override]))



def test_drop_path_rates_rise_linearly_and_drop_whole_residual_branches():
    """model.drop_path: block i of n drops its residual branch with rate x i / (n - 1) (timm's ResNet), per
    sample, kept branches scaled by 1 / keep (torchvision.ops.stochastic_depth, "row"); evaluation and rate 0
    leave the network as it was; the same seed draws the same masks (resumable from the RNG state)."""
    from torchvision.ops import stochastic_depth

    from resnext.models.blocks import Bottleneck

    model = build_model("resnext50_32x4d", num_classes=10, drop_path=0.2)
    rates = [m.drop_path for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(rates) == 16 and rates[0] == 0 and rates[-1] == pytest.approx(0.2)
    assert rates == pytest.approx([0.2 * i / 15 for i in range(16)])
    torch.manual_seed(0)
    block = build_model("resnext29_8x64d", num_classes=10, cardinality=2, width=2, drop_path=0.5).layer3[-1]
    assert block.drop_path == 0.5
    x = torch.randn(64, block.conv1.in_channels, 4, 4)
    block.train()
    branch = block.transform(x)
    torch.manual_seed(3)
    got = block(x)
    torch.manual_seed(3)
    want = torch.relu(stochastic_depth(branch, 0.5, "row", training=True) + x)  # the oracle, same draws
    assert torch.allclose(got, want, atol=1e-6)
    dropped = [torch.allclose(got[i], torch.relu(x[i]), atol=1e-6) for i in range(64)]
    assert 16 < sum(dropped) < 48  # about half the samples lost the branch, the rest kept it scaled x2
    block.eval()
    assert torch.allclose(block(x), torch.relu(block.transform(x) + x), atol=1e-6)  # evaluation: no drop
    plain = build_model("resnext50_32x4d", num_classes=10)
    assert all(m.drop_path == 0 for m in plain.modules() if isinstance(m, Bottleneck))
    with pytest.raises(ValueError, match="drop_path must be in"):
        build_model("resnext50_32x4d", drop_path=1.0)
