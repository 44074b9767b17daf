"""Instagram-pretrained architectures, fine-tuning starts, TorchScript/ONNX export, torch.hub."""

from __future__ import annotations

import copy
import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from inference_helpers import CIFAR10_NAMES, TINY_MODEL, make_run, tool, write_cifar10_meta
from runs import PY, ROOT, env
from torchvision.models.resnet import Bottleneck as TVBottleneck
from torchvision.models.resnet import ResNet as TVResNet

from resnext import export
from resnext.data.cifar import CIFAR_MEAN, CIFAR_STD
from resnext.models import VARIANTS, CifarResNeXt, build_model
from resnext.models.complexity import count_params
from resnext.models.finetune import init_from
from resnext.models.interop import load_torchvision

IG_COUNTS = {"ig_resnext101_32x8d": 88_791_336, "ig_resnext101_32x16d": 194_026_792,
             "ig_resnext101_32x32d": 468_530_472, "ig_resnext101_32x48d": 828_411_176}


@pytest.mark.parametrize("name,count", sorted(IG_COUNTS.items()))
def test_ig_param_counts_exact(name, count):
    with torch.device("meta"):
        assert count_params(build_model(name)) == count


@pytest.mark.slow
def test_torchvision_32x8d_file_loads_into_ig_model(tmp_path):
    torch.manual_seed(0)
    tv = TVResNet(TVBottleneck, [3, 4, 23, 3], groups=32, width_per_group=8).eval()
    torch.save(tv.state_dict(), tmp_path / "ig.pth")
    ours = load_torchvision(build_model("ig_resnext101_32x8d"), tmp_path / "ig.pth").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), rtol=0, atol=1e-5)


# ---------------------------------------------------------------- fine-tuning starts (model.init_from)

def small(classes: int = 10, cardinality: int = 2, depth: int = 11) -> CifarResNeXt:
    return CifarResNeXt(depth=depth, cardinality=cardinality, width=4, num_classes=classes)


LAYOUTS = {  # how each source wraps the same state dict
    "torchvision": lambda sd: sd,
    "ours": lambda sd: {"model": sd, "model_config": {"arch": "cifar_resnext"}, "epoch": 90},
    "ddp": lambda sd: {"module." + k: v for k, v in sd.items()},
    "timm_checkpoint": lambda sd: {"state_dict": sd, "epoch": 3},
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_init_from_keeps_backbone_and_replaces_head(tmp_path, layout):
    torch.manual_seed(1)
    src = small(10).state_dict()
    torch.save(LAYOUTS[layout](src), tmp_path / "w.pth")
    torch.manual_seed(2)
    dst = small(37)
    fresh_head = {k: v.clone() for k, v in dst.fc.state_dict().items()}
    msg = init_from(dst, tmp_path / "w.pth")
    assert msg == f"init_from {tmp_path / 'w.pth'}: backbone loaded, classifier replaced (10 -> 37 classes)"
    got = dst.state_dict()
    for k, v in src.items():
        if not k.startswith("fc."):
            assert torch.equal(got[k], v), k  # weights and BN statistics
    assert dst.fc.weight.shape == (37, 1024)
    assert all(torch.equal(dst.fc.state_dict()[k], v) for k, v in fresh_head.items())


def test_init_from_same_head_and_headless(tmp_path):
    torch.manual_seed(1)
    src = small(10).state_dict()
    torch.save(src, tmp_path / "full.pth")
    dst = small(10)
    assert init_from(dst, tmp_path / "full.pth").endswith(": all weights loaded")
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in src.items())
    torch.save({k: v for k, v in src.items() if not k.startswith("fc.")}, tmp_path / "headless.pth")
    dst = small(5)
    head = dst.fc.weight.clone()
    assert "file has no classifier; fresh classifier (5 classes)" in init_from(dst, tmp_path / "headless.pth")
    assert torch.equal(dst.layer3[0].conv2.weight, src["layer3.0.conv2.weight"]) and torch.equal(dst.fc.weight, head)


def test_init_from_a_url_or_a_torchvision_name_through_the_hub_cache(tmp_path, monkeypatch):
    """model.init_from takes a URL (file:// here, so no network is needed), fetched into torch.hub's cache as
    torchvision's weights are, and torchvision:NAME, read from that cache when it is there; offline and not
    cached, one line."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    torch.manual_seed(1)
    src = small(10).state_dict()
    torch.save(src, tmp_path / "published.pth")
    dst = small(10)
    msg = init_from(dst, f"file://{tmp_path / 'published.pth'}")
    cached = tmp_path / "home" / "hub" / "checkpoints" / "published.pth"
    assert msg.endswith("all weights loaded") and cached.is_file()
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in src.items())
    # torchvision's name: its DEFAULT weights' file, pre-filled in the cache (a real ResNet-18 layout)
    from torchvision.models import resnet18

    tv = resnet18(num_classes=1000).state_dict()
    torch.save(tv, cached.parent / "resnet18-f37072fd.pth")  # the file name of ResNet18_Weights.IMAGENET1K_V1's URL
    ours = build_model("resnet", depth=18, num_classes=7)
    assert init_from(ours, "torchvision:resnet18").endswith("classifier replaced (1000 -> 7 classes)")
    assert torch.equal(ours.layer4[1].conv2.weight, tv["layer4.1.conv2.weight"])
    assert init_from(build_model("resnet", depth=18), "torchvision:ResNet18_Weights.IMAGENET1K_V1").endswith(
        "all weights loaded")
    for spec, expect in (("torchvision:resnet5O", "torchvision:resnet5O: not a torchvision model or weights name"),
                         (f"file://{tmp_path / 'gone.pth'}", f"cannot download file://{tmp_path / 'gone.pth'} ("),
                         ("http://127.0.0.1:9/w.pth", "cannot download http://127.0.0.1:9/w.pth (")):
        with pytest.raises(ValueError) as e:
            init_from(small(10), spec)
        assert expect in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert not (cached.parent / "gone.pth").exists() and not (cached.parent / "w.pth").exists()


@pytest.mark.parametrize("other,expect", [
    (lambda: small(10, cardinality=4), "first: layer1.0.conv1.weight, file (16, 64, 1, 1) vs model (8, 64, 1, 1)"),
    (lambda: small(10, depth=20), "first: layer1.1.conv1.weight, not in the model"),
    (lambda: build_model("resnext29_8x64d").layer1, "first: conv1.weight, not in the file"),
])
def test_init_from_refuses_other_architecture(tmp_path, other, expect):
    torch.save(other().state_dict(), tmp_path / "other.pth")
    dst = small(37)
    before = copy.deepcopy(dst.state_dict())
    with pytest.raises(ValueError, match="weights are for another architecture") as e:
        init_from(dst, tmp_path / "other.pth")
    assert expect in str(e.value) and "\n" not in str(e.value)
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in before.items())  # nothing half-loaded


def test_init_from_unreadable_files(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"\x00not a weights file")
    for name, expect in [("missing.pth", "missing.pth: no such weights file"),
                         ("junk.pth", "junk.pth: not a loadable weights file")]:
        with pytest.raises(ValueError, match=expect) as e:
            init_from(small(), tmp_path / name)
        assert "\n" not in str(e.value)


@pytest.mark.slow
def test_train_with_init_from(tmp_path):
    from runs import records, train

    torch.save(CifarResNeXt(depth=29, cardinality=2, width=2, num_classes=5).state_dict(), tmp_path / "w.pth")
    res = train(tmp_path / "run", f"model.init_from={tmp_path / 'w.pth'}", "trainer.epochs=1",
                "trainer.max_steps_per_epoch=1", "trainer.eval_every=5")
    assert res.returncode == 0, res.stderr
    assert "backbone loaded, classifier replaced (5 -> 10 classes)" in res.stdout
    assert records(tmp_path / "run", "end")[-1]["status"] == "finished"
    bad = train(tmp_path / "run2", f"model.init_from={tmp_path / 'missing.pth'}")
    assert bad.returncode == 2 and "no such weights file" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- export

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    write_cifar10_meta(base / "cifar")  # the class names the export carries
    run = base / "run"
    return run, make_run(run, *TINY_MODEL, "data=cifar10", f"data.root={base / 'cifar'}")  # val_crop 32


def exported_outputs(fmt: str, path, x: torch.Tensor) -> torch.Tensor:
    if fmt == "torchscript":
        with torch.no_grad():
            return torch.jit.load(str(path))(x)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": x.numpy()})[0])


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("fmt,flags", [("torchscript", []), ("torchscript", ["--channels-last", "--fp16"]),
                                       ("onnx", []), ("onnx", ["--fp16"])])
def test_export_matches_pytorch(tiny_run, tmp_path, capsys, fmt, flags):
    for module in (["onnx", "onnxscript", "onnxruntime"] if fmt == "onnx" else []):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"ONNX export check needs {module}: pip install -e '.[onnx]'")
    run, model = tiny_run
    fp16 = "--fp16" in flags
    out = tmp_path / "exported" / f"tiny.{fmt}" if flags else run / f"model{export.FORMATS[fmt]}"
    export.main([str(run), "--format", fmt, *(["--out", str(out)] if flags else []), *flags])
    stdout = capsys.readouterr().out
    assert f"-> {out} ({fmt}" in stdout and "input N x 3 x 32 x 32" in stdout and out.is_file()
    diff = float(stdout.split("max abs difference vs PyTorch on random input (batch 3): ")[1].split()[0])
    assert diff <= (1e-2 if fp16 else 1e-5)
    # the written file, run here on a batch size neither export nor its check used
    model = copy.deepcopy(model).to(torch.float16 if fp16 else torch.float32)
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(7)).to(model.fc.weight.dtype)
    with torch.no_grad():
        want = model(x)
    got = exported_outputs(fmt, out, x)
    assert got.shape == (5, 10) and got.dtype == want.dtype
    tol = dict(rtol=1e-2, atol=1e-2) if fp16 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.float(), want.float(), **tol)
    # the file says what input it expects: the run's evaluation transform and its class names
    meta = exported_metadata(fmt, out)
    assert (meta["resize"], meta["crop"], meta["interpolation"]) == (32, 32, "bilinear")
    assert meta["mean"] == pytest.approx(list(CIFAR_MEAN)) and meta["std"] == pytest.approx(list(CIFAR_STD))
    assert meta["class_names"] == CIFAR10_NAMES and meta["source"].startswith(run.name)


def exported_metadata(fmt: str, path) -> dict:
    """The description an exported file carries (ONNX metadata_props / TorchScript extra file)."""
    import json

    if fmt == "onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        return json.loads(props[export.METADATA])
    extra = {export.METADATA: ""}
    torch.jit.load(str(path), _extra_files=extra)
    return json.loads(extra[export.METADATA])


def test_export_bad_input_one_line(tmp_path, tiny_run, capsys):
    run = tiny_run[0]
    for args, expect in [([tmp_path / "nope.pth", "--format", "onnx"], "nope.pth: no such weights file or run directory"),
                         ([run, "--format", "tflite"], "--format 'tflite' is not supported; choose one of torchscript, onnx")]:
        res = tool("export", *args)  # as a user meets it: one line, exit code 2, no traceback
        assert res.returncode == 2 and res.stdout == "", res.stderr
        assert res.stderr.startswith("error: ") and expect in res.stderr and len(res.stderr.strip().splitlines()) == 1
    (tmp_path / "junk.pth").write_bytes(b"junk")
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "outside.txt").write_text("keep")
    (tmp_path / "link.pt").symlink_to(tmp_path / "outside.txt")
    for argv, expect in [([str(run)], "the following arguments are required: --format"),
                         ([str(tmp_path / "not_a_run"), "--format", "torchscript"], "not a run directory"),
                         ([str(tmp_path / "junk.pth"), "--format", "torchscript"], "junk.pth: "),
                         ([str(run), "--format", "torchscript", "--image-size", "0"], "--image-size 0: must be"),
                         ([str(run), "--format", "torchscript", "--out", str(tmp_path)], "is a directory"),
                         ([str(run), "--format", "torchscript", "--image-size", "100000"],
                          "--image-size 100000: a forward of 5 image(s) at 100000x100000 needs about"),
                         # outputs that cannot be written: checked before the model is loaded or traced
                         ([str(run), "--format", "torchscript", "--out", "/proc/m.pt"],
                          "--out /proc/m.pt: its folder /proc is not writable"),
                         ([str(run), "--format", "torchscript", "--out", "/proc/no/m.pt"],
                          "--out /proc/no/m.pt: its folder /proc/no cannot be created in /proc"),
                         ([str(run), "--format", "onnx", "--out", str(tmp_path / "junk.pth" / "m.onnx")],
                          "its folder " + str(tmp_path / "junk.pth") + " is a file"),
                         ([str(run), "--format", "torchscript", "--out", str(tmp_path / "link.pt")],
                          "link.pt is a symbolic link")]:
        with pytest.raises(SystemExit) as exit_info:
            export.main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and expect in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert (tmp_path / "outside.txt").read_text() == "keep" and not Path("/proc/no").exists()


# ---------------------------------------------------------------- torch.hub

def test_hub_lists_every_model_and_nothing_else():
    # torch.hub.list reads GitHub only; this is its rule for entry points: public callables of hubconf
    spec = importlib.util.spec_from_file_location("hubconf_under_test", ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entries = [f for f in dir(hubconf) if callable(getattr(hubconf, f)) and not f.startswith("_")]
    assert sorted(entries) == sorted(VARIANTS) and hubconf.dependencies == ["torch", "torchvision"]
    assert hubconf.resnext50_32x4d.__name__ == "resnext50_32x4d" and "weights=PATH" in hubconf.resnext50_32x4d.__doc__


@pytest.mark.parametrize("name,kwargs", [("resnext50_32x4d", {}), ("resnext29_8x64d", {"num_classes": 100}),
                                         ("ig_resnext101_32x48d", {})])
def test_hub_builds_our_models(name, kwargs):
    with torch.device("meta"):
        hub = torch.hub.load(str(ROOT), name, source="local", verbose=False, **kwargs)
        ours = build_model(name, **kwargs)
    assert type(hub) is type(ours) and count_params(hub) == count_params(ours)
    assert [(k, v.shape) for k, v in hub.state_dict().items()] == [(k, v.shape) for k, v in ours.state_dict().items()]
    assert hub.fc.out_features == kwargs.get("num_classes", 1000)


def test_hub_weights_load_strictly(tmp_path):
    assert count_params(torch.hub.load(str(ROOT), "resnext50_32x4d", source="local", verbose=False)) == 25_028_904
    torch.manual_seed(5)
    sd = build_model("resnext50_32x4d", num_classes=7).state_dict()
    torch.save({"model": sd, "epoch": 1}, tmp_path / "ours.pt")  # our checkpoint layout; 7 classes
    m = torch.hub.load(str(ROOT), "resnext50_32x4d", source="local", weights=str(tmp_path / "ours.pt"), verbose=False)
    assert m.fc.out_features == 7 and all(torch.equal(m.state_dict()[k], v) for k, v in sd.items())
    torch.save({**sd, "extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=r"unexpected \['extra.weight'\]"):
        torch.hub.load(str(ROOT), "resnext50_32x4d", source="local", weights=str(tmp_path / "extra.pth"), verbose=False)
    with pytest.raises(ValueError, match="shape of layer1.0.conv1.weight"):  # a file for another architecture
        torch.hub.load(str(ROOT), "resnet50", source="local", weights=str(tmp_path / "ours.pt"), verbose=False)


def test_hub_works_without_the_package_installed(tmp_path):
    """hubconf.py puts its clone's src/ first on sys.path: a copy loads its own code, not the installed one."""
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "src" / "resnext", clone / "src" / "resnext", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "hubconf.py", clone / "hubconf.py")
    code = ("import sys, torch; m = torch.hub.load(sys.argv[1], 'resnext29_8x64d', source='local', num_classes=3); "
            "import resnext; print(resnext.__file__); print(m.fc.out_features)")
    res = subprocess.run([PY, "-c", code, str(clone)], capture_output=True, text=True, env=env(), cwd=tmp_path,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(clone / "src" / "resnext" / "__init__.py"), "3"]
