"""Methods beyond the paper (off in every paper recipe: tests/test_recipe_golden.py), each against the
ecosystem's own implementation as the oracle."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnext.compose import compose_config
from resnext.config import validate
from resnext.engine.precision import Precision
from resnext.engine.step import train_step
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


@pytest.mark.parametrize("foreach", [False, True])
def test_lamb_is_timms_with_the_decay_groups(foreach):
    """optim.name=lamb: five steps on the same gradients equal timm's Lamb (its single-tensor and multi-tensor
    forms, whose rounding differs; gradient clipping left to optim.clip_grad_norm, so its max_grad_norm off),
    the trust ratio on decayed tensors only; the state survives a weights-only checkpoint round trip.
    (Gradients are drawn, not computed: through a network's feedback timm's own two forms part by 2e-2
    within five steps.)"""
    import io

    from timm.optim import Lamb as TimmLamb

    cfg = compose_config(["+recipe=resnext29_demo_digits", "optim.name=lamb", "optim.lr=0.01", "optim.ref_batch=8",
                          "optim.weight_decay=0.02", "optim.no_decay=bn_and_bias", "optim.betas=[0.8,0.99]",
                          "optim.eps=1e-6"]).optim
    model, ref = tiny(), tiny()
    opt = build_optimizer(cfg, model, 8)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.02, 0.0]
    names = {id(p): n for n, p in model.named_parameters()}
    refs = dict(ref.named_parameters())
    ref_opt = TimmLamb([{"params": [refs[names[id(p)]] for p in g["params"]], "weight_decay": g["weight_decay"]}
                        for g in opt.param_groups], lr=0.01, betas=(0.8, 0.99), eps=1e-6, max_grad_norm=None,
                       foreach=foreach)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        for n, p in model.named_parameters():
            p.grad = torch.randn(p.shape, generator=g) * 0.1
            refs[n].grad = p.grad.clone()
        opt.step()
        ref_opt.step()
    for n, p in model.named_parameters():
        assert torch.allclose(p, refs[n], rtol=1e-6, atol=1e-7), n
    start = dict(tiny().named_parameters())
    moved = {n: (p - start[n]).norm() / start[n].norm() for n, p in model.named_parameters() if start[n].norm() > 0}
    assert moved["fc.weight"] > 0.01  # a decayed tensor: its step is lr x trust ratio x a unit-scale direction
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    again = build_optimizer(cfg, tiny(), 8)
    again.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    assert float(next(iter(again.state.values()))["step"]) == 5


@pytest.mark.parametrize("override, message", [
    ("optim.clip_grad_norm=-1", "optim.clip_grad_norm=-1.0 must be >= 0 (0 = no clipping)"),
    ("optim.betas=[0.9]", "optim.betas=[0.9] must be two factors in [0, 1)"),
    ("optim.name=lars", "optim.name='lars' is not valid; choose one of sgd, adamw, lamb"),
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


def test_drop_path_draws_are_timms_and_do_not_depend_on_the_split():
    """Drawn stochastic depth (engine.depth, as training draws it): a block keeps sample i where its draw is
    >= the rate, which is timm's DropPath given the same uniforms (torch.rand inside bernoulli is that
    comparison); a step's draws for an image are the same on 1 process x 2 micro-batches as on 2 processes,
    and differ between steps and seeds."""
    from timm.layers import DropPath

    from resnext.engine.depth import DepthDraws
    from resnext.models.blocks import drawn_drops, dropping_blocks

    model = build_model("resnext29_8x64d", num_classes=10, cardinality=2, width=2, drop_path=0.4).train()
    blocks = dropping_blocks(model)
    assert len(blocks) == 8  # 9 blocks, the first at rate 0
    block = blocks[-1]
    x = torch.randn(64, block.conv1.in_channels, 4, 4)
    u = torch.rand(64, len(blocks))
    with drawn_drops(blocks, u):
        got = block(x)
    assert block.drop_draws is None  # only within
    branch = block.transform(x)
    oracle = DropPath(0.4).train()
    with torch.random.fork_rng():  # timm draws bernoulli_(keep): the same as rand >= 1 - keep for these draws
        kept = u[:, -1] >= 0.4
        want = torch.relu(branch * kept.view(-1, 1, 1, 1) / 0.6 + x)
        torch.manual_seed(5)
        mask = torch.empty(64, 1, 1, 1).bernoulli_(0.6)
        torch.manual_seed(5)
        assert torch.allclose(oracle(branch), branch * mask / 0.6)
    assert torch.allclose(got, want, atol=1e-6) and 0 < int(kept.sum()) < 64
    d = DepthDraws(blocks=8, seed=3)
    one = d.rows(epoch=1, step=4, rank=0, world=1, rows=32)
    assert torch.equal(torch.cat([d.rows(1, 4, r, 2, 16) for r in range(2)]), one)
    assert not torch.equal(d.rows(1, 5, 0, 1, 32), one) and not torch.equal(DepthDraws(8, 4).rows(1, 4, 0, 1, 32), one)


def test_drawn_drops_under_torch_compile_follow_eager_without_recompiling():
    """The per-step draws reach a compiled model as block attributes: the compiled forward (dynamo, eager
    backend: the graph capture is what could go wrong) equals the eager one for new draws every step, and
    changing them compiles nothing new."""
    import torch._dynamo

    from resnext.models.blocks import drawn_drops, dropping_blocks

    torch._dynamo.reset()
    model = build_model("resnext29_8x64d", num_classes=10, cardinality=2, width=2, drop_path=0.5).train()
    compiled = torch.compile(model, backend="eager")
    blocks, x = dropping_blocks(model), torch.randn(8, 3, 16, 16)
    for step in range(4):
        u = torch.rand(8, len(blocks), generator=torch.Generator().manual_seed(step))
        with torch.no_grad(), drawn_drops(blocks, u):
            got, want = compiled(x), model(x)
        assert torch.equal(got, want), step
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    torch._dynamo.reset()


@pytest.mark.parametrize("every, warmup", [(1, 0), (2, 3)])
def test_weight_ema_is_averaged_model_with_ema_over_parameters_and_buffers(every, warmup):
    """trainer.ema_decay: the average after each step equals torch.optim.swa_utils.AveragedModel with
    get_ema_multi_avg_fn and use_buffers=True, updated every ``every`` steps and restarted (n_averaged = 0)
    while the warmup lasts, as torchvision's reference drives it."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from resnext.engine.ema import WeightEMA

    model = tiny()
    ema = WeightEMA(model, 0.9, every, warmup)
    oracle = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(1, 9):
        x, y = batch(step)
        opt.zero_grad()
        nn.CrossEntropyLoss()(model(x), y).backward()  # training mode: BN buffers move too
        opt.step()
        ema.update(model, step)
        if step % every == 0:
            if step <= warmup:
                oracle.n_averaged.fill_(0)
            oracle.update_parameters(model)
    want = oracle.module.state_dict()
    got = ema.module.state_dict()
    assert got.keys() == want.keys()
    for k in want:
        assert torch.allclose(got[k].float(), want[k].float(), atol=1e-6), k
    assert not torch.equal(got["fc.weight"], model.state_dict()["fc.weight"])  # an average, not a copy


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mixup_and_cutmix_are_torchvisions_given_the_same_draws(kind):
    """engine.mix on one group spanning the batch equals torchvision.transforms.v2.MixUp / CutMix given the
    same lam (and box centre): images and soft targets, bit for bit."""
    from torchvision.transforms import v2

    from resnext.engine.mix import Draw, mix

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 3, 20, 24, generator=g), torch.randint(0, 5, (6,), generator=g)
    tv = (v2.MixUp if kind == "mixup" else v2.CutMix)(alpha=1.0, num_classes=5)
    torch.manual_seed(7)
    want_x, want_y = tv(x, y)
    torch.manual_seed(7)  # the same draws, in torchvision's order
    lam = float(torch.distributions.Beta(torch.tensor([1.0]), torch.tensor([1.0])).sample(()))
    d = Draw(False, lam) if kind == "mixup" else Draw(True, lam, int(torch.randint(24, (1,))), int(torch.randint(20, (1,))))
    got_x, got_y = mix(x, y, d, 5, 6)
    assert torch.equal(got_x, want_x) and torch.equal(got_y, want_y)
    assert not torch.equal(got_x, x)


def test_mix_partners_stay_in_their_bn_group_and_draws_do_not_depend_on_the_split():
    """Each image mixes with its neighbour inside its BN group, so the per-process halves of a global batch mix
    exactly as the whole; a step's draw is a function of (seed, epoch, step)."""
    from resnext.engine.mix import Mixer

    mixer = Mixer(0.2, 1.0, 10, 4, seed=3)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
    draws = [mixer.draw(2, step, 8, 8) for step in range(40)]
    assert draws == [mixer.draw(2, step, 8, 8) for step in range(40)]
    assert {d.cutmix for d in draws} == {True, False} and all(0 <= d.lam <= 1 for d in draws)
    for d in draws[:6]:
        whole = mixer(x, y, d)
        halves = [mixer(x[i:i + 8], y[i:i + 8], d) for i in (0, 8)]
        assert torch.equal(torch.cat([h[0] for h in halves]), whole[0])
        assert torch.equal(torch.cat([h[1] for h in halves]), whole[1])
    d = Mixer(1.0, 0.0, 10, 4, seed=3).draw(0, 0, 8, 8)
    mixed, soft = Mixer(1.0, 0.0, 10, 4, seed=3)(x, y, d)
    one_hot = torch.nn.functional.one_hot(y, 10).float()
    for i in range(16):  # the partner: the previous image of the group of 4, the first takes the last
        partner = i - 1 if i % 4 else i + 3
        assert torch.allclose(soft[i], d.lam * one_hot[i] + (1 - d.lam) * one_hot[partner])
        assert torch.allclose(mixed[i], d.lam * x[i] + (1 - d.lam) * x[partner], atol=1e-6)


@pytest.mark.parametrize("policy", ["ta_wide", "randaugment"])
def test_auto_augment_and_random_erasing_are_torchvisions_seeded_per_sample(tmp_path, policy):
    """data.auto_augment / data.random_erase (torchvision loader): after our crop and flip, torchvision's
    TrivialAugmentWide or RandAugment, then normalization and RandomErasing, as ClassificationPresetTrain
    orders them, their draws from a generator seeded by the sample's seed: the same sample, the same image
    on any worker and after a resume; the caller's generator untouched."""
    from imagenet_data_helpers import cfg as data_cfg
    from PIL import Image
    from torchvision import transforms as T
    from torchvision.transforms import functional as F

    from resnext.data.imagenet_augment import draw
    from resnext.data.imagenet_folder import MEAN, STD
    from resnext.data.imagenet_torch import TrainTransform
    from resnext.data.policies import POLICY_SEED
    from resnext.data.tools import make_fake

    make_fake(tmp_path / "fk", 2, 1, 1, (80, 60))
    path = next((tmp_path / "fk" / "train").rglob("*.JPEG"))
    c = data_cfg(tmp_path / "fk", "torch", auto_augment=policy, random_erase=0.5, image_size=48)
    tf = TrainTransform(c)
    with Image.open(path) as im:
        img = im.convert("RGB")
    torch.manual_seed(99)
    got = [tf(img, seed) for seed in range(6)]
    assert torch.equal(torch.rand(1), torch.manual_seed(99) and torch.rand(1))  # the caller's stream untouched
    assert all(torch.equal(g, tf(img, s)) for s, g in enumerate(got))  # a function of the sample's seed
    for seed, g in enumerate(got):
        a = draw(seed, img.width, img.height, tf.aug)
        ref = img.crop((a.x, a.y, a.x + a.w, a.y + a.h)).resize((48, 48), Image.BILINEAR)
        if a.flip:
            ref = ref.transpose(Image.FLIP_LEFT_RIGHT)
        torch.manual_seed(seed ^ POLICY_SEED)
        mode = T.InterpolationMode.BILINEAR
        ref = (T.TrivialAugmentWide(interpolation=mode) if policy == "ta_wide" else T.RandAugment(2, 9, interpolation=mode))(ref)
        want = T.RandomErasing(0.5)(F.normalize(F.to_tensor(ref), MEAN, STD))
        assert torch.equal(g, want), seed
    assert len({g.sum().item() for g in got}) == 6


def test_policies_outside_the_imagenet_loaders_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="run in the ImageNet loaders .torch, dali_cpu, dali_gpu. on a JPEG folder"):
        validate(compose_config(["+recipe=resnext29_demo_digits", "data.auto_augment=ta_wide"]))
    for backend in ("torch", "dali_cpu", "dali_gpu"):
        validate(compose_config(["+recipe=resnext50_32x4d_imagenet", f"data.backend={backend}", "data.root=/d",
                                 "data.random_erase=0.1", "data.auto_augment=randaugment"]), cuda=True)


@pytest.mark.parametrize("name", ["ta_wide", "randaugment"])
def test_policy_draws_are_torchvisions_own_sample_by_sample(name):
    """resnext.data.policies.draw_policy (what the DALI pipeline is fed) replays the draws torchvision's
    TrivialAugmentWide / RandAugment(2, 9) and RandomErasing(0.5) make from the same per-sample seed: the op,
    its magnitude with its sign, and the erased box, for 400 samples; every op is drawn about equally often."""
    from torchvision import transforms as T
    from torchvision.transforms import autoaugment

    from resnext.data.policies import POLICY_SEED, Policy, draw_policy

    policy = Policy(name, 2 if name == "randaugment" else 1, 9, 0.5, 48)
    tv = T.TrivialAugmentWide() if name == "ta_wide" else T.RandAugment(2, 9)
    erase = T.RandomErasing(0.5)
    seen, boxes, real_apply, real_params = [], [], autoaugment._apply_op, T.RandomErasing.get_params

    def record(img, op, magnitude, **kw):
        seen.append((op, magnitude))
        return img

    def params(img, scale, ratio, value=None):
        out = real_params(img, scale, ratio, value)
        boxes.append(out[:4] if out[2] < img.shape[-2] or out[3] < img.shape[-1] else None)
        return out

    counts = [0] * 14
    try:
        autoaugment._apply_op, T.RandomErasing.get_params = record, staticmethod(params)
        for seed in range(400):
            seen.clear()
            boxes.clear()
            with torch.random.fork_rng():
                torch.manual_seed(seed ^ POLICY_SEED)
                tv(torch.zeros(3, 48, 48, dtype=torch.uint8))
                erase(torch.zeros(3, 48, 48))
            d = draw_policy(policy, seed)
            want = [(policy.space[i][0], (-1.0 if neg else 1.0) * float(policy.space[i][1][b])
                     if policy.space[i][1].ndim else 0.0) for i, b, neg in d.ops]
            assert [(op, pytest.approx(m) if m else 0.0) for op, m in seen] == want, seed
            assert (boxes[0] if boxes else None) == d.erase, seed
            for i, _, _ in d.ops:
                counts[i] += 1
    finally:
        autoaugment._apply_op, T.RandomErasing.get_params = real_apply, staticmethod(real_params)
    n = sum(counts)
    assert all(abs(c - n / 14) < 4 * (n / 14) ** 0.5 for c in counts), counts  # uniform over the 14 ops


def dali_policy_ops(policy, img, cases):
    """``img`` through the policy's DALI ops (CPU mode), one sample per (op index, bin, negated) case."""
    import numpy as np
    from nvidia.dali import fn, pipeline_def, types

    from resnext.data.policies import apply_dali

    cols = [np.array([c[k] for c in cases], np.int32) for k in range(3)]

    @pipeline_def(batch_size=len(cases), num_threads=1, device_id=None, enable_conditionals=True)
    def pipe():
        x, i, b, s = fn.external_source(source=lambda: ([img] * len(cases), *cols), num_outputs=4, batch=True,
                                        layout=["HWC", "", "", ""])
        return apply_dali(policy, x, [i, b, s], types.INTERP_LINEAR)

    p = pipe()
    p.build()
    return p.run()[0]


def test_dali_policy_ops_are_torchvisions_ops():
    """Each op of both policies in DALI (CPU mode), given torchvision's magnitude and sign, against
    torchvision's _apply_op on PIL on a real photo (scikit-learn's china.jpg, 160 x 120), in 8-bit levels:
    identity, translations, posterize and solarize exactly; shears, rotations, brightness, colour,
    contrast, sharpness and autocontrast within 1 level on average (the warps' interpolation grids and the
    sharpness filter's 1-pixel border differ: measured means 0.3-0.9, isolated edge pixels up to 127);
    equalize, OpenCV's histogram formula in DALI against PIL's, within 3 (measured 2.7)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_image
    from torchvision import transforms as T
    from torchvision.transforms import autoaugment

    from resnext.data.policies import Policy

    img = np.ascontiguousarray(np.asarray(Image.fromarray(load_sample_image("china.jpg")).resize((160, 120))))
    exact = {"Identity", "TranslateX", "TranslateY", "Posterize", "Solarize"}
    for name in ("ta_wide", "randaugment"):
        policy = Policy(name, 1, 9, 0.0, 160)
        cases = [(i, b, neg) for i, (_, mags, signed) in enumerate(policy.space)
                 for b in ([0] if mags.ndim == 0 else [4, 17, 30]) for neg in ([0, 1] if signed else [0])]
        if name == "randaugment":
            cases = [(i, 9, neg) for i, b, neg in cases if b in (0, 4)]  # one fixed bin: data.randaugment_magnitude

        out = dali_policy_ops(policy, img, cases)
        for k, (i, b, neg) in enumerate(cases):
            op, mags, _ = policy.space[i]
            m = (-1.0 if neg else 1.0) * float(mags[b]) if mags.ndim else 0.0
            want = np.asarray(autoaugment._apply_op(Image.fromarray(img), op, m, T.InterpolationMode.BILINEAR, None))
            diff = np.abs(np.asarray(out.at(k)).astype(int) - want.astype(int))
            bound = 0 if op in exact else 3 if op == "Equalize" else 1
            assert diff.mean() <= bound, (name, op, m, diff.mean())


def test_the_torchvision_v2_recipe_is_its_command_value_by_value():
    """recipes/resnext50_32x4d_tv_v2.yaml against torchvision's published command and its reference script's
    defaults (docs/paper.md "Beyond the paper"), and it validates as a run would."""
    cfg = compose_config(["+recipe=resnext50_32x4d_tv_v2", "data.root=/d"])
    d, o, s, t = cfg.data, cfg.optim, cfg.schedule, cfg.trainer
    command = {  # flag: (our value, torchvision's)
        "--batch-size 128 x 8 GPUs": (d.batch_size, 1024), "--lr 0.5": (o.lr * 1024 / o.ref_batch, 0.5),
        "--lr-scheduler cosineannealinglr": (s.name, "cosine"), "--lr-warmup-epochs 5": (s.warmup_epochs, 5),
        "--lr-warmup-decay 0.01": (s.warmup_start, 0.01), "--auto-augment ta_wide": (d.auto_augment, "ta_wide"),
        "--epochs 600": (t.epochs, 600), "--random-erase 0.1": (d.random_erase, 0.1),
        "--weight-decay 0.00002": (o.weight_decay, 2e-5), "--norm-weight-decay 0.0": (o.no_decay, "bn"),
        "--label-smoothing 0.1": (o.label_smoothing, 0.1), "--mixup-alpha 0.2": (d.mixup_alpha, 0.2),
        "--cutmix-alpha 1.0": (d.cutmix_alpha, 1.0), "--train-crop-size 176": (d.image_size, 176),
        "--val-resize-size 232": (d.val_resize, 232), "--val-crop-size 224": (d.val_crop, 224),
        "--momentum 0.9": (o.momentum, 0.9), "--opt sgd": (o.nesterov, False),
        "--model-ema-steps 32": (t.ema_every, 32), "--interpolation bilinear": (d.interpolation, "bilinear"),
    }
    for flag, (ours, theirs) in command.items():
        assert ours == pytest.approx(theirs) if isinstance(theirs, float) else ours == theirs, flag
    assert t.ema_decay == pytest.approx(1 - (1 - 0.99998) * 8 * 128 * 32 / 600, abs=1e-6)
    assert (d.color_jitter, d.lighting, o.name) == (0.0, 0.0, "sgd")
    assert (cfg.paper.top1_err, cfg.paper.top5_err) == (pytest.approx(100 - 81.198), pytest.approx(100 - 95.340))
    validate(cfg, 8, True)


def test_the_resnext101_v2_recipe_is_the_resnext50_one_on_another_network():
    from omegaconf import OmegaConf

    a, b = (OmegaConf.to_container(compose_config([f"+recipe={n}"]), resolve=True)
            for n in ("resnext50_32x4d_tv_v2", "resnext101_32x8d_tv_v2"))
    for cfg in (a, b):
        cfg.pop("name"), cfg.pop("paper")
    assert (b["model"].pop("depth"), b["model"].pop("width")) == (101, 8)
    a["model"].pop("depth"), a["model"].pop("width")
    assert a == b



@pytest.mark.slow
def test_a_jpeg_folder_run_with_every_method_on_resumes_exactly(tmp_path):
    """The augmentation policies need a JPEG folder (digits cannot run them): on DALI (the torch loader's
    draws are the same functions of the sample's seed: test_auto_augment_and_random_erasing_...), a run
    with TrivialAugmentWide, random erasing, repeated augmentation, Mixup/CutMix, EMA and stochastic depth,
    stopped after one epoch and resumed, ends bit for bit as the uninterrupted one (the policy draws are
    functions of the sample's position, like the crops)."""
    from runs import train

    from resnext.data.tools import make_fake

    make_fake(tmp_path / "fk", 2, 24, 4, (64, 48))
    run = [f"data.root={tmp_path / 'fk'}", "data.dataset=imagenet", "data.backend=dali_cpu", "data.batch_size=16",
           "data.image_size=32", "data.val_resize=36", "data.val_crop=32", "model.num_classes=0", "data.workers=1",
           "data.auto_augment=ta_wide", "data.random_erase=0.5", "data.repeated_aug=2", "model.bn_batch=8",
           "data.mixup_alpha=0.2", "data.cutmix_alpha=1.0", "trainer.ema_decay=0.9", "model.drop_path=0.2",
           "trainer.max_steps_per_epoch=2"]
    assert train(tmp_path / "straight", *run, "trainer.epochs=2").returncode == 0
    assert train(tmp_path / "resumed", *run, "trainer.epochs=1").returncode == 0
    res = train(tmp_path / "resumed", *run, "trainer.epochs=2")
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = (torch.load(tmp_path / n / "checkpoints" / "last.pt", weights_only=True) for n in ("straight", "resumed"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["ema"]["module"][k], b["ema"]["module"][k]) for k in a["ema"]["module"])
