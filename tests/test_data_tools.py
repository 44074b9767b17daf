"""`python -m resnext.data`: make-fake, verify (corrupt, PNG-as-JPEG, CMYK), prepare-val; trainer refusals."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from PIL import Image
from runs import PY, ROOT, env, train


def tool(*args):
    return subprocess.run([PY, "-m", "resnext.data", *args], capture_output=True, text=True, env=env(), cwd=ROOT,
                          timeout=120)


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("fake") / "imagenet"
    res = tool("make-fake", str(root), "--classes", "3", "--per-class", "6", "--val-per-class", "2", "--size", "64x48")
    assert res.returncode == 0, res.stderr
    return root


def test_make_fake_layout(fake):
    classes = sorted(p.name for p in (fake / "train").iterdir())
    assert classes == sorted(p.name for p in (fake / "val").iterdir()) and len(classes) == 3
    files = sorted((fake / "train" / classes[0]).glob("*.JPEG"))
    assert len(files) == 6
    with Image.open(files[0]) as im:
        assert im.format == "JPEG" and im.size == (64, 48) and im.mode == "RGB"


def test_verify_clean_then_finds_planted_problems(fake, tmp_path):
    ok = tool("verify", str(fake))
    assert ok.returncode == 0 and "train: 18 images in 3 classes" in ok.stdout and "0 problem(s)" in ok.stdout
    root = tmp_path / "r"
    shutil.copytree(fake, root)
    cls = sorted((root / "train").iterdir())
    corrupt = sorted(cls[0].iterdir())[0]
    corrupt.write_bytes(corrupt.read_bytes()[:200])
    png = cls[1] / "disguised.JPEG"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(png, format="PNG")
    cmyk = cls[2] / "cmyk.JPEG"
    Image.new("CMYK", (16, 16), (0, 50, 100, 0)).save(cmyk, format="JPEG")
    (root / "val" / "extra_class").mkdir()
    res = tool("verify", str(root))
    assert res.returncode == 1
    problems = [ln for ln in res.stdout.splitlines() if ln.startswith("problem:")]
    text = "\n".join(problems)
    assert f"{corrupt}: not decodable" in text
    assert f"{png}: PNG data in a .JPEG file" in text
    assert f"{cmyk}: CMYK JPEG" in text
    assert "empty class folder" in text and "class mismatch" in text
    assert len(problems) == 5


def test_prepare_val_moves_once(tmp_path):
    val = tmp_path / "val"
    val.mkdir()
    synsets = ["n01440764", "n01443537", "n01440764", "n01484850", "n01443537"]
    for i in range(1, 6):
        Image.new("RGB", (8, 8)).save(val / f"ILSVRC2012_val_{i:08d}.JPEG")
    labels = tmp_path / "LOC_val.txt"
    labels.write_text("".join(f"ILSVRC2012_val_{i:08d} {s}\n" for i, s in enumerate(synsets, 1)))
    res = tool("prepare-val", str(val), str(labels))
    assert res.returncode == 0 and "moved 5 images" in res.stdout
    assert sorted(p.name for p in val.iterdir()) == ["n01440764", "n01443537", "n01484850"]
    assert sorted(p.name for p in (val / "n01440764").iterdir()) == [
        "ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000003.JPEG"]
    again = tool("prepare-val", str(val), str(labels))
    assert again.returncode == 0 and "nothing to move" in again.stdout
    assert len(list(val.rglob("*.JPEG"))) == 5


def test_prepare_val_numeric_labels_and_refuses_half_finish(tmp_path):
    train = tmp_path / "train"
    for c in ("n02", "n01"):
        (train / c).mkdir(parents=True)
    val = tmp_path / "val"
    val.mkdir()
    for i in range(1, 4):
        Image.new("RGB", (8, 8)).save(val / f"ILSVRC2012_val_{i:08d}.JPEG")
    Image.new("RGB", (8, 8)).save(val / "stray.JPEG")  # not in the label file
    labels = tmp_path / "gt.txt"
    labels.write_text("1\n2\n1\n")  # devkit style: 1-based class indices, one per line
    res = tool("prepare-val", str(val), str(labels), "--classes-from", str(train))
    assert res.returncode == 2 and "stray.JPEG" in res.stderr and "nothing moved" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert len(list(val.glob("*.JPEG"))) == 4  # untouched
    (val / "stray.JPEG").unlink()
    res = tool("prepare-val", str(val), str(labels), "--classes-from", str(train))
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (val / "n01").iterdir()) == ["ILSVRC2012_val_00000001.JPEG",
                                                               "ILSVRC2012_val_00000003.JPEG"]


@pytest.mark.parametrize("args,expect", [
    (["verify", "/nonexistent/root"], "/nonexistent/root: not a folder"),
    (["prepare-val", "/nonexistent/val", "/nonexistent/labels"], "/nonexistent/val: not a folder"),
    (["make-fake", "/tmp/x", "--size", "big"], "WIDTHxHEIGHT"),
])
def test_tool_bad_input(args, expect):
    res = tool(*args)
    assert res.returncode == 2 and expect in res.stderr and "Traceback" not in res.stderr


def imagenet_run(root, run_dir, *extra):
    return train(run_dir, "data=imagenet", f"data.root={root}", "data.backend=dali_cpu", "model.num_classes=0",
                 "data.batch_size=6", "data.image_size=32", "data.val_resize=36", "data.val_crop=32",
                 "data.workers=1", "data.pad=0", "data.flip=true", "trainer.epochs=1", *extra)


@pytest.mark.slow
def test_trainer_on_imagenet_folder_and_its_refusals(fake, tmp_path):
    res = imagenet_run(fake, tmp_path / "ok")
    assert res.returncode == 0, res.stderr
    assert "val top-1 error" in res.stdout and "(6 images)" in res.stdout
    broken = tmp_path / "broken"
    shutil.copytree(fake, broken)
    shutil.rmtree(broken / "val")
    res = imagenet_run(broken, tmp_path / "bad1")
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        f"error: {broken / 'val'}: missing; an ImageNet root needs {broken}/train/<class>/*.JPEG and "
        f"{broken}/val/<class>/*.JPEG (see `python -m resnext.data prepare-val`)"]
    shutil.copytree(fake / "val", broken / "val")
    victim = sorted((broken / "train").rglob("*.JPEG"))[4]
    victim.write_bytes(b"\xff\xd8 truncated")
    res = imagenet_run(broken, tmp_path / "bad2")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(f"error: {victim}: not decodable")
