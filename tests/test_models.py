"""Models are the paper's: exact parameter counts, multiply-adds, forms a/b/c, torchvision interop."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import Bottleneck as TVBottleneck
from torchvision.models.resnet import ResNet as TVResNet

from resnext.models import (
    VARIANTS,
    Bottleneck,
    BottleneckA,
    BottleneckB,
    CifarResNeXt,
    ResNeXt,
    WideResNet,
    build_model,
    convert_form,
)
from resnext.models.complexity import count_params, measure
from resnext.models.interop import export_torchvision, load_torchvision

# torchvision parameter counts (docs/paper.md), to the unit.
TORCHVISION_COUNTS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnext50_32x4d": 25_028_904,
    "resnet101": 44_549_160,
    "resnext101_32x4d": 44_177_704,
    "resnext101_64x4d": 83_455_272,
    "resnext101_32x8d": 88_791_336,
    "resnet152": 60_192_808,
    "resnet200": 64_673_832,
    "wide_resnet50_2": 68_883_240,
}


def _meta_params(name: str, **kw) -> int:
    with torch.device("meta"):
        return count_params(build_model(name, **kw))


@pytest.mark.parametrize("name,count", sorted(TORCHVISION_COUNTS.items()))
def test_param_counts_match_torchvision(name, count):
    assert _meta_params(name) == count


# Exact counts of our definitions (stored, pycls-style) and the paper's Table 7 figure. The paper
# prints 68.1M for 16x64d whose exact count is 68.155M: it truncates to one decimal (34.43 -> 34.4 too),
# so the paper check allows 0.06M.
@pytest.mark.parametrize("name,exact,millions", [("resnext29_8x64d", 34_426_698, 34.4),
                                                 ("resnext29_16x64d", 68_155_210, 68.1),
                                                 ("wrn28_10", 36_479_194, 36.5)])
def test_cifar_param_counts(name, exact, millions):
    got = _meta_params(name, num_classes=10)
    assert got == exact
    assert abs(got / 1e6 - millions) < 0.06


def test_cifar_16x64d_macs():
    # issue 6 quotes 10.7 G multiply-adds per 32x32 image for ResNeXt-29 16x64d
    assert abs(measure(lambda: build_model("resnext29_16x64d"), 32).gflops - 10.7) < 0.05


def test_a_built_model_is_measured_on_fake_tensors_and_left_as_it_was():
    """measure_model counts a real model (here in training mode, with ghost BN) without computing: the meta
    build's counts, and its mode, weights and BN statistics untouched."""
    from resnext.models.complexity import measure_model
    from resnext.models.ghost_bn import convert_ghost_bn

    torch.manual_seed(0)
    model = convert_ghost_bn(build_model("resnext50_32x4d").train(), 32)
    model.layer1.eval()  # a part in another mode than the whole (a frozen stage) stays so
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    assert measure_model(model, 224) == measure(lambda: build_model("resnext50_32x4d"), 224)
    assert [m.training for m in model.modules()] == modes and model.training and not model.layer1.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_macs_resnet50_and_resnext50():
    r50 = measure(lambda: build_model("resnet50"), 224)
    x50 = measure(lambda: build_model("resnext50_32x4d"), 224)
    assert abs(r50.gflops - 4.1) < 0.05
    assert abs(x50.gflops - 4.2) < 0.05
    assert r50.params == TORCHVISION_COUNTS["resnet50"]


@pytest.mark.parametrize("c,d,gw", [(2, 40, 80), (4, 24, 96), (8, 14, 112), (32, 4, 128)])
def test_table2_conv2_template_keeps_complexity(c, d, gw):
    # Table 2 is about the conv2 template (a block at 56x56, 256 channels in and out): ~70k params,
    # ~0.22 G multiply-adds, whatever C x d. The grouped-conv width is the table's third row.
    def block():
        return Bottleneck(256, 64, cardinality=c, width=d)

    ref = measure_block(lambda: Bottleneck(256, 64, cardinality=1, width=64))
    got = measure_block(block)
    assert block().conv2.out_channels == gw
    assert abs(got[0] / ref[0] - 1) < 0.03 and abs(got[1] / ref[1] - 1) < 0.03
    assert abs(ref[1] / 1e9 - 0.22) < 0.005 and abs(ref[0] / 1e3 - 70) < 1


def measure_block(build):
    from torch.utils.flop_counter import FlopCounterMode
    with torch.device("meta"):
        blk = build()
        x = torch.empty(1, 256, 56, 56)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        blk(x)
    return count_params(blk) - sum(p.numel() for n, p in blk.named_parameters() if "bn" in n), \
        counter.get_total_flops() // 2


@pytest.mark.parametrize("name", ["resnext50_2x40d", "resnext50_4x24d", "resnext50_8x14d"])
def test_table3_networks_near_resnet50_complexity(name):
    # whole networks drift a little more than the conv2 template (8x14d: +4.4% multiply-adds)
    ref = measure(lambda: build_model("resnet50"), 224)
    got = measure(lambda: build_model(name), 224)
    assert abs(got.macs / ref.macs - 1) < 0.05
    assert abs(got.params / ref.params - 1) < 0.03


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="resnext50_32x4d") as e:
        build_model("resnxt50_32x4d")
    assert "unknown model 'resnxt50_32x4d'" in str(e.value)


@pytest.mark.parametrize("kwargs,word", [
    (dict(depth=50, cardinality=0, width=4), "cardinality"),
    (dict(depth=50, cardinality=32, width=0), "width"),
    (dict(depth=34, cardinality=1, width=64), "depth"),
])
def test_impossible_shapes_raise(kwargs, word):
    with pytest.raises(ValueError, match=word):
        ResNeXt(**kwargs)


def test_cifar_and_wrn_depth_rules():
    with pytest.raises(ValueError, match="9n \\+ 2"):
        CifarResNeXt(depth=30)
    with pytest.raises(ValueError, match="6n \\+ 4"):
        WideResNet(depth=27)


def _tv(name: str) -> nn.Module:
    if name == "resnet200":
        return TVResNet(TVBottleneck, [3, 24, 36, 3])
    if name == "resnext101_32x4d":
        return TVResNet(TVBottleneck, [3, 4, 23, 3], groups=32, width_per_group=4)
    return getattr(torchvision.models, name)(weights=None)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TORCHVISION_COUNTS))
def test_torchvision_weights_give_same_logits(name, tmp_path):
    torch.manual_seed(0)
    tv = _tv(name).eval()
    # random BN statistics so the comparison is not trivially near-identity
    for m in tv.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    path = tmp_path / "tv.pth"
    torch.save(tv.state_dict(), path)
    ours = load_torchvision(build_model(name), path).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - tv(x)).abs().max().item() < 1e-5
    back = _tv(name)
    back.load_state_dict(export_torchvision(ours), strict=True)
    for (k, a), b in zip(back.state_dict().items(), ours.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_wrong_architecture_weights_refused():
    sd = build_model("resnet50").state_dict()
    with pytest.raises(ValueError, match="do not fit"):
        load_torchvision(build_model("resnext50_32x4d"), sd)


def test_ddp_prefixed_state_dict_loads():
    src = CifarResNeXt(cardinality=2, width=4, num_classes=5)
    sd = {"module." + k: v for k, v in src.state_dict().items()}
    dst = load_torchvision(CifarResNeXt(cardinality=2, width=4, num_classes=5), sd)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values(), strict=True))


def _randomize_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)


def _grads_of_c_in(other: nn.Module, c: Bottleneck) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, gradient in the split form, the same parameters' gradient in form c) for every parameter."""
    d = c.conv2.out_channels // c.cardinality
    pairs = [("bn3.weight", other.bn3.weight.grad, c.bn3.weight.grad), ("bn3.bias", other.bn3.bias.grad, c.bn3.bias.grad)]
    for i, path in enumerate(other.paths):
        s = slice(i * d, (i + 1) * d)
        pairs += [(f"paths.{i}.conv1", path[0].weight.grad, c.conv1.weight.grad[s]),
                  (f"paths.{i}.bn1.weight", path[1].weight.grad, c.bn1.weight.grad[s]),
                  (f"paths.{i}.bn1.bias", path[1].bias.grad, c.bn1.bias.grad[s]),
                  (f"paths.{i}.conv2", path[3].weight.grad, c.conv2.weight.grad[s]),
                  (f"paths.{i}.bn2.weight", path[4].weight.grad, c.bn2.weight.grad[s]),
                  (f"paths.{i}.bn2.bias", path[4].bias.grad, c.bn2.bias.grad[s])]
        if isinstance(other, BottleneckA):
            pairs.append((f"ends.{i}", other.ends[i].weight.grad, c.conv3.weight.grad[:, s]))
    if isinstance(other, BottleneckB):
        pairs.append(("conv3", other.conv3.weight.grad, c.conv3.weight.grad))
    if c.downsample is not None:
        for k, (a, b) in enumerate(zip(other.downsample.parameters(), c.downsample.parameters(), strict=True)):
            pairs.append((f"downsample.{k}", a.grad, b.grad))
    return pairs


@pytest.mark.parametrize("form_cls", [BottleneckA, BottleneckB])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("stride,in_ch", [(1, 256), (2, 128)])
def test_forms_a_b_equal_c_in_float64(form_cls, train, stride, in_ch):
    """Built in float64 and split in float64 (no cast after slicing): outputs, input gradients and every
    parameter's gradient agree with form c to float64 rounding."""
    torch.manual_seed(1)
    c = Bottleneck(in_ch, 64, stride=stride, cardinality=4, width=8).to(torch.float64)
    _randomize_bn(c)
    other = form_cls(c)  # no .double(): the split form must already be float64
    assert {p.dtype for p in other.parameters()} | {b.dtype for b in other.buffers() if b.is_floating_point()} == {
        torch.float64}
    c.train(train)
    other.train(train)
    x1 = torch.randn(3, in_ch, 9, 9, dtype=torch.float64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    y1, y2 = c(x1), other(x2)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(y2, y1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-11, atol=1e-11)
    pairs = _grads_of_c_in(other, c)
    assert len(pairs) >= 4 * 6 + 2 and all(a is not None for _, a, _ in pairs)
    for name, a, b in pairs:
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)
    if train:  # running statistics move the same way
        torch.testing.assert_close(other.bn3.running_mean, c.bn3.running_mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(other.paths[1][1].running_var, c.bn1.running_var[8:16], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("form", ["a", "b"])
def test_convert_form_keeps_device_dtype_and_mode(form):
    import copy

    torch.manual_seed(2)
    net = CifarResNeXt(depth=11, cardinality=4, width=4, num_classes=7).to(torch.float64).eval()
    _randomize_bn(net)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    conv = convert_form(copy.deepcopy(net), form)
    assert not any(isinstance(m, Bottleneck) for m in conv.modules())
    assert {t.dtype for t in (*conv.parameters(), *conv.buffers()) if t.is_floating_point()} == {torch.float64}
    assert not any(m.training for m in conv.modules())  # the eval-mode network stays in eval mode
    with torch.no_grad():
        torch.testing.assert_close(conv(x), net(x), rtol=1e-12, atol=1e-12)
    with torch.device("meta"):  # the device is kept too (a meta network stays on meta)
        meta = ResNeXt(depth=50, cardinality=2, width=4, num_classes=3)
    converted = convert_form(meta, form)
    assert {t.device.type for t in (*converted.parameters(), *converted.buffers())} == {"meta"}


def test_no_shortcut_drops_projection_and_addition():
    blk = Bottleneck(64, 64, stride=2, cardinality=2, width=4, shortcut=False).eval()
    assert blk.downsample is None
    x = torch.randn(1, 64, 8, 8)
    with torch.no_grad():
        assert torch.equal(blk(x), torch.relu(blk.transform(x)))
    net = build_model("resnext50_32x4d", shortcut=False)
    with_sc = build_model("resnext50_32x4d")
    # ablation removes the four projection shortcuts
    assert count_params(net) < count_params(with_sc)


def test_zero_init_last_bn_makes_blocks_identity():
    net = ResNeXt(50, 32, 4, zero_init_last_bn=True)
    assert all(float(m.bn3.weight.detach().abs().sum()) == 0 for m in net.modules() if isinstance(m, Bottleneck))
    blk = next(m for m in net.modules() if isinstance(m, Bottleneck) and m.downsample is None).eval()
    x = torch.rand(1, blk.conv1.in_channels, 5, 5)
    with torch.no_grad():
        assert torch.equal(blk(x), torch.relu(x))


def test_channels_last_equals_nchw():
    torch.manual_seed(3)
    net = CifarResNeXt(depth=11, cardinality=8, width=4, num_classes=10).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = net(x)
        net_cl = net.to(memory_format=torch.channels_last)
        out = net_cl(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_bf16_autocast_forward_backward_finite():
    torch.manual_seed(4)
    net = CifarResNeXt(depth=11, cardinality=4, width=4).to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nn.functional.cross_entropy(net(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert loss.dtype == torch.float32


def test_every_named_model_builds_on_meta():
    for name in VARIANTS:
        with torch.device("meta"):
            assert count_params(build_model(name)) > 0
