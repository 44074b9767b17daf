"""`python -m resnext.data`: make-fake, verify (corrupt, PNG-as-JPEG, CMYK), prepare-val; trainer refusals."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from imagenet_data_helpers import huge_jpeg
from PIL import Image
from runs import PY, ROOT, env, train

from resnext.data.__main__ import main

SYNSETS = ["n01440764", "n01443537", "n01440764", "n01484850", "n01443537"]  # val images 1..5


def tool(capsys, *args: str) -> tuple[int, str, str]:
    """Run the tool in this process: (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("fake") / "imagenet"
    res = subprocess.run([PY, "-m", "resnext.data", "make-fake", str(root), "--classes", "3", "--per-class", "6",
                          "--val-per-class", "2", "--size", "64x48"], capture_output=True, text=True, env=env(),
                         cwd=ROOT, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == f"wrote 24 JPEG files under {root}", res.stderr
    return root


def flat_val(folder, n: int = 5):
    folder.mkdir()
    for i in range(1, n + 1):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(folder / f"ILSVRC2012_val_{i:08d}.JPEG")
    return folder


def test_make_fake_layout(fake):
    classes = sorted(p.name for p in (fake / "train").iterdir())
    assert classes == sorted(p.name for p in (fake / "val").iterdir()) and len(classes) == 3
    files = sorted((fake / "train" / classes[0]).glob("*.JPEG"))
    assert len(files) == 6 and len(list((fake / "val" / classes[0]).glob("*.JPEG"))) == 2
    with Image.open(files[0]) as im:
        assert im.format == "JPEG" and im.size == (64, 48) and im.mode == "RGB"


def test_verify_clean_then_finds_planted_problems(fake, tmp_path, capsys):
    code, out, _ = tool(capsys, "verify", fake)
    assert code == 0 and "train: 18 images in 3 classes (6..6 per class)" in out and "0 problem(s)" in out
    assert any(line.split() == ["n00000001", "6", "2"] for line in out.splitlines())  # per-class counts
    root = tmp_path / "r"
    shutil.copytree(fake, root)
    cls = sorted((root / "train").iterdir())
    corrupt = sorted(cls[0].iterdir())[0]
    corrupt.write_bytes(corrupt.read_bytes()[:200])
    png = cls[1] / "disguised.JPEG"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(png, format="PNG")
    cmyk = cls[2] / "cmyk.JPEG"
    Image.new("CMYK", (16, 16), (0, 50, 100, 0)).save(cmyk, format="JPEG")
    bomb = cls[2] / "bomb.JPEG"
    bomb.write_bytes(huge_jpeg(sorted(cls[2].iterdir())[0].read_bytes()))
    (root / "val" / "extra_class").mkdir()
    code, out, _ = tool(capsys, "verify", root, "--workers", "1")
    assert code == 1
    problems = sorted(line for line in out.splitlines() if line.startswith("problem:"))
    assert problems == sorted([
        f"problem: {corrupt}: not decodable (OSError)",
        f"problem: {png}: PNG data in a .JPEG file",
        f"problem: {cmyk}: CMYK JPEG (decoders expect RGB or grayscale)",
        f"problem: {bomb}: too large an image to decode (30000x30000 pixels, more than the 178,956,970 PIL allows: "
        "a decompression bomb?)",
        f"problem: {root / 'val' / 'extra_class'}: empty class folder",
        f"problem: {root}: class mismatch: only in train [], only in val ['extra_class']",
    ])
    assert "6 problem(s)" in out


def test_verify_finds_a_truncated_tail_with_workers(fake, tmp_path, capsys):
    root = tmp_path / "r"
    shutil.copytree(fake, root)
    big = root / "train" / "n00000000" / "big.JPEG"
    make = Image.effect_noise((300, 200), 60).convert("RGB")
    make.save(big, quality=95)
    big.write_bytes(big.read_bytes()[:-4000])  # header and most scans intact, the end missing
    for i in range(300):  # enough files for the process pool
        shutil.copy(root / "train" / "n00000001" / "train_1_00000.JPEG", root / "train" / "n00000001" / f"c{i}.JPEG")
    code, out, _ = tool(capsys, "verify", root, "--workers", "2")
    assert code == 1 and f"problem: {big}: not decodable" in out and "1 problem(s)" in out


@pytest.mark.parametrize("form", ["pairs", "loc_csv", "valprep", "synset_lines"])
def test_prepare_val_moves_once(tmp_path, capsys, form):
    val = flat_val(tmp_path / "val")
    names = [f"ILSVRC2012_val_{i:08d}" for i in range(1, 6)]
    text = {
        "pairs": "".join(f"{n} {s}\n" for n, s in zip(names, SYNSETS, strict=True)),
        "loc_csv": "ImageId,PredictionString\n" + "".join(f"{n},{s} 10 20 30 40 {s} 1 2 3 4\n"
                                                          for n, s in zip(names[::-1], SYNSETS[::-1], strict=True)),
        "valprep": "".join(f"mkdir -p {s}\n" for s in set(SYNSETS)) + "".join(
            f"mv {n}.JPEG {s}/\n" for n, s in zip(names, SYNSETS, strict=True)),
        "synset_lines": "".join(f"{s}\n" for s in SYNSETS),
    }[form]
    labels = tmp_path / "labels.txt"
    labels.write_text(text)
    code, out, err = tool(capsys, "prepare-val", val, labels)
    assert code == 0 and "moved 5 images" in out, err
    assert sorted(p.name for p in val.iterdir()) == ["n01440764", "n01443537", "n01484850"]
    assert sorted(p.name for p in (val / "n01440764").iterdir()) == [
        "ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000003.JPEG"]
    with Image.open(val / "n01484850" / "ILSVRC2012_val_00000004.JPEG") as im:
        assert im.getpixel((0, 0))[0] in (3, 4, 5)  # the very file, moved (JPEG shifts a level or so)
    code, out, _ = tool(capsys, "prepare-val", val, labels)
    assert code == 0 and "nothing to move" in out
    assert len(list(val.rglob("*.JPEG"))) == 5


def test_prepare_val_numeric_labels_and_refuses_half_finish(tmp_path, capsys):
    train = tmp_path / "train"
    for c in ("n02", "n01", "n03"):
        (train / c).mkdir(parents=True)
    val = flat_val(tmp_path / "val", 3)
    Image.new("RGB", (8, 8)).save(val / "stray.JPEG")  # not in the label file
    labels = tmp_path / "gt.txt"
    labels.write_text("0\n2\n0\n")  # 0-based indices into the sorted train folders: n01, n03, n01
    code, _, err = tool(capsys, "prepare-val", val, labels, "--classes-from", train)
    assert code == 2 and err == f"error: {val / 'stray.JPEG'}: not in {labels} (1 such files); nothing moved\n"
    assert len(list(val.glob("*.JPEG"))) == 4  # untouched
    (val / "stray.JPEG").unlink()
    code, _, err = tool(capsys, "prepare-val", val, labels, "--classes-from", train)
    assert code == 0, err
    assert sorted(p.name for p in (val / "n01").iterdir()) == ["ILSVRC2012_val_00000001.JPEG",
                                                               "ILSVRC2012_val_00000003.JPEG"]
    assert [p.name for p in (val / "n03").iterdir()] == ["ILSVRC2012_val_00000002.JPEG"]


@pytest.mark.parametrize("text,expect", [
    ("1\n3\n2\n", "labels run 1..3, like the devkit's ILSVRC2012_IDs"),  # devkit ids: not our order
    ("0\n3\n1\n", "gt.txt:2: label 3 outside 0..2"),
    ("n01\n../../etc\nn02\n", "gt.txt:2: '../../etc' is not a class folder name"),
    ("n01\nn09\nn02\n", "gt.txt:2: class n09 is not a folder of"),
    ("ILSVRC2012_val_00000001 n01\nn02\nn01\n", "mixes lines with and without file names"),
])
def test_prepare_val_refuses_bad_labels(tmp_path, capsys, text, expect):
    train = tmp_path / "train"
    for c in ("n01", "n02", "n03"):
        (train / c).mkdir(parents=True)
    val = flat_val(tmp_path / "val", 3)
    (tmp_path / "gt.txt").write_text(text)
    code, _, err = tool(capsys, "prepare-val", val, tmp_path / "gt.txt", "--classes-from", train)
    assert code == 2 and expect in err and len(err.splitlines()) == 1
    assert len(list(val.glob("*.JPEG"))) == 3  # nothing moved


@pytest.mark.parametrize("args,expect", [
    (["verify", "/nonexistent/root"], "error: /nonexistent/root: not a folder"),
    (["prepare-val", "/nonexistent/val", "/nonexistent/labels"], "error: /nonexistent/val: not a folder"),
    (["make-fake", "/tmp/x", "--size", "big"], "WIDTHxHEIGHT"),
    (["make-fake", "/tmp/x", "--classes", "0"], "--classes, --per-class and --val-per-class must be >= 1"),
    (["make-fake", "/proc/no/such/place"], "/proc/no/such/place"),
    (["verify"], "the following arguments are required: root"),
])
def test_tool_bad_input_is_one_line(capsys, args, expect):
    code, _, err = tool(capsys, *args)
    assert code == 2 and expect in err and len(err.splitlines()) == 1


def test_tool_bad_input_in_a_real_process():
    res = subprocess.run([PY, "-m", "resnext.data", "verify", "/nonexistent/root"], capture_output=True, text=True,
                         env=env(), cwd=ROOT, timeout=120)
    assert res.returncode == 2 and res.stderr.splitlines() == [
        "error: /nonexistent/root: not a folder; expected an ImageNet root holding train/ and val/"]


def imagenet_run(root, run_dir, *extra, nproc: int = 1):
    return train(run_dir, "data=imagenet", f"data.root={root}", "data.backend=dali_cpu", "model.num_classes=0",
                 "data.batch_size=6", "data.image_size=32", "data.val_resize=36", "data.val_crop=32",
                 "data.workers=1", "data.pad=0", "data.flip=true", "trainer.epochs=1", *extra, nproc=nproc)


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_trainer_on_imagenet_folder(fake, tmp_path, nproc):
    res = imagenet_run(fake, tmp_path / "ok", nproc=nproc)
    assert res.returncode == 0, res.stderr
    assert "val top-1 error" in res.stdout and "(6 images)" in res.stdout  # every val image once over ranks


@pytest.mark.slow
def test_trainer_refuses_unusable_imagenet_folders(fake, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(fake, broken)
    shutil.rmtree(broken / "val")
    res = imagenet_run(broken, tmp_path / "bad1")
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        f"error: {broken / 'val'}: missing; an ImageNet root needs {broken}/train/<class>/*.JPEG and "
        f"{broken}/val/<class>/*.JPEG (ImageNet's own val: `python -m resnext.data prepare-val`; or hold out "
        "part of train/: data.val_fraction=0.1)"]
    shutil.copytree(fake / "val", broken / "val")
    victim = sorted((broken / "train").rglob("*.JPEG"))[4]
    victim.write_bytes(b"\xff\xd8 truncated")
    res = imagenet_run(broken, tmp_path / "bad2")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(f"error: 1 training file(s) cannot be used: {victim}: ")


def test_one_class_is_refused_and_skipped_files_are_listed(fake, tmp_path, capsys):
    """A folder of one class would train to 0% error without a word: training refuses it in one line and
    verify reports it; files that training does not read (.webp, .txt) are counted by extension, not hidden."""
    root = tmp_path / "one"
    shutil.copytree(fake, root)
    for split in ("train", "val"):
        for extra in sorted((root / split).iterdir())[1:]:
            shutil.rmtree(extra)
    (root / "train" / "n00000000" / "notes.txt").write_text("x")
    (root / "train" / "n00000000" / "photo.webp").write_bytes(b"RIFF")
    res = imagenet_run(root, tmp_path / "run")
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "error: the data set has 1 class(es); a classifier needs at least 2 (with one it learns to answer that "
        "class, at 0% error); give data.root a folder per class"]
    assert not (tmp_path / "run").exists()
    code, out, _ = tool(capsys, "verify", root)
    assert code == 1
    assert "not images, skipped by training (only .jpeg, .jpg, .png are read): 1 .txt, 1 .webp" in out
    assert f"problem: {root / 'train'}: one class folder; a classifier needs at least 2 classes" in out


def test_verify_lists_hidden_image_folders_and_escapes_names(fake, tmp_path, capsys):
    """A hidden folder holding images is a problem line; a class named with an escape code and a newline is
    printed escaped (it cannot break a line or drive the terminal)."""
    root = tmp_path / "r"
    shutil.copytree(fake, root)
    hidden = root / "train" / ".stash"
    hidden.mkdir()
    shutil.copy(next((root / "train" / "n00000000").iterdir()), hidden / "a.JPEG")
    for split in ("train", "val"):
        odd = root / split / "red\x1b[31m\nname"
        odd.mkdir()
        shutil.copy(next((root / split / "n00000000").iterdir()), odd / "a.JPEG")
    code, out, _ = tool(capsys, "verify", root, "--workers", "1")
    assert code == 1 and f"problem: {hidden}: a hidden folder holding 1 image(s), skipped; " in out
    assert "\x1b" not in out and "red\\x1b[31m\\nname" in out
    assert all(line == line.strip("\r") for line in out.splitlines())


def test_an_error_naming_a_file_stays_one_line(capsys):
    from resnext.errors import fail, printable

    assert printable("tab\there, new\nline, \x1b[31mred, ümlaut ok") == "tab\\there, new\\nline, \\x1b[31mred, ümlaut ok"
    with pytest.raises(SystemExit) as e:
        fail("/data/cat\n\x1b[2Jdog.JPEG: not decodable")
    assert e.value.code == 2 and capsys.readouterr().err == "error: /data/cat\\n\\x1b[2Jdog.JPEG: not decodable\n"
