"""resnext.predict: top-k classes with probabilities from a weights file or a run directory."""

from __future__ import annotations

import json

import pytest
import torch
from imagenet_data_helpers import huge_jpeg
from inference_helpers import (
    CIFAR10_NAMES,
    TINY_MODEL,
    make_run,
    parse_predictions,
    reference_input,
    tool,
    write_cifar10_meta,
    write_images,
)
from torchvision.models import ResNet50_Weights

from resnext import predict
from resnext.data.cifar import CIFAR_MEAN, CIFAR_STD
from resnext.data.imagenet_folder import MEAN, STD
from resnext.models import build_model

IMAGENET_NAMES = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory):
    """A torchvision-layout resnet50 state dict (random weights) and the model it came from."""
    torch.manual_seed(0)
    model = build_model("resnet50").eval()
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(model.state_dict(), path)
    return path, model


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("images"))


def expected_topk(model, image, k, resize, crop, mean, std, **kw) -> tuple[list[float], list[int]]:
    with torch.no_grad():
        p, i = model(reference_input(image, resize, crop, mean, std, **kw)).softmax(dim=1)[0].topk(k)
    return p.tolist(), i.tolist()


def test_weights_file_prints_top5_imagenet_names(resnet50_file, images):
    path, model = resnet50_file
    res = tool("predict", path, *images, "--arch", "resnet50")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == (
        "model: resnet50.pth as resnet50, 1000 classes; the file records no preprocessing, assumed: shorter side "
        "256 (bilinear), centre 224, mean 0.485, 0.456, 0.406, std 0.229, 0.224, 0.225")
    preds = parse_predictions(res.stdout)
    assert list(preds) == [str(p) for p in images]
    for image in images:
        top = preds[str(image)]
        probs = [p for p, _, _ in top]
        assert len(top) == 5 and probs == sorted(probs, reverse=True)
        assert sum(probs) <= 1.0 + 5 * 5e-5  # printed to 4 decimals
        assert [name for _, _, name in top] == [IMAGENET_NAMES[i] for _, i, _ in top]
        # the model cards' preprocessing written out by hand: shorter side 256 bilinear, crop 224, mean/std
        want_p, want_i = expected_topk(model, image, 5, 256, 224, MEAN, STD)
        assert [i for _, i, _ in top] == want_i
        assert probs == pytest.approx(want_p, abs=1e-4)


def test_run_dir_uses_its_transform_and_cifar_names(tmp_path, images, capsys):
    write_cifar10_meta(tmp_path / "cifar")
    model = make_run(tmp_path / "run", *TINY_MODEL, "data=cifar10", f"data.root={tmp_path / 'cifar'}")
    predict.main([str(tmp_path / "run"), str(images[0]), str(images[2]), "--topk", "3"])
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "model: run (last.pt), 10 classes"  # the final model, not best.pt
    preds = parse_predictions(out)
    for image in (images[0], images[2]):
        top = preds[str(image)]
        assert [name for _, _, name in top] == [CIFAR10_NAMES[i] for _, i, _ in top]
        want_p, want_i = expected_topk(model, image, 3, 32, 32, CIFAR_MEAN, CIFAR_STD)  # the run's val transform
        assert [i for _, i, _ in top] == want_i
        assert [p for p, _, _ in top] == pytest.approx(want_p, abs=1e-4)


def test_imagenet_run_dir_resizes_with_its_filter(tmp_path, images, capsys):
    """A run trained with data.interpolation=bicubic (the paper recipes) is shown its images as its val
    loader resized them: bicubic, at its val_resize / val_crop (here derived from image_size 64: 73 / 64)."""
    from PIL import Image

    from resnext.loading import load_model

    make_run(tmp_path / "run", *TINY_MODEL, "data=imagenet", "data.image_size=64", "model.num_classes=10",
             "data.interpolation=bicubic")
    tf = predict.transform(load_model(tmp_path / "run").preprocessing())
    x = predict.read_image(str(images[0]), tf)
    bicubic = reference_input(images[0], 73, 64, MEAN, STD, filt=Image.BICUBIC)
    bilinear = reference_input(images[0], 73, 64, MEAN, STD)
    assert x.shape == (1, 3, 64, 64) and torch.allclose(x, bicubic, atol=1e-5)
    assert (x - bilinear).abs().max() > 0.02  # the filters differ on this image
    predict.main([str(tmp_path / "run"), str(images[0]), "--topk", "10"])
    assert len(parse_predictions(capsys.readouterr().out)[str(images[0])]) == 10


def test_run_dir_without_names_prints_indices(tmp_path, images, capsys):
    # model.num_classes=0 ("from the data") and no model_config in the checkpoint: the classifier decides
    make_run(tmp_path / "run", *TINY_MODEL, "data=synthetic", "model.num_classes=0", with_model_config=False)
    predict.main([str(tmp_path / "run"), str(images[1]), "--topk", "12"])
    top = parse_predictions(capsys.readouterr().out)[str(images[1])]
    assert len(top) == 10 and all(name == "" for _, _, name in top)  # all 10 classes, no names
    assert sorted(i for _, i, _ in top) == list(range(10))
    assert sum(p for p, _, _ in top) == pytest.approx(1.0, abs=1e-3)


def test_image_size_override_keeps_crop_fraction(resnet50_file, images, capsys):
    path, model = resnet50_file
    predict.main([str(path), str(images[0]), "--arch", "resnet50", "--image-size", "112", "--topk", "2"])
    top = parse_predictions(capsys.readouterr().out)[str(images[0])]
    want_p, want_i = expected_topk(model, images[0], 2, 128, 112, MEAN, STD)  # 112 / 0.875 = 128
    assert [i for _, i, _ in top] == want_i and [p for p, _, _ in top] == pytest.approx(want_p, abs=1e-4)


def test_bad_input_is_one_line(tmp_path, images, resnet50_file, capsys):
    make_run(tmp_path / "run", *TINY_MODEL, "data=synthetic")
    (tmp_path / "junk.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    (tmp_path / "empty_run").mkdir()
    (tmp_path / "bomb.jpg").write_bytes(huge_jpeg(images[0].read_bytes()))  # 30,000 x 30,000 by its header
    run, img = str(tmp_path / "run"), str(images[0])
    cases = [
        ([run, str(tmp_path / "bomb.jpg")], "bomb.jpg: too large an image to decode (Image size (900000000 pixels)"),
        ([run, img, "--image-size", "100000"], "--image-size 100000: a forward of 1 image(s) at 100000x100000 "
                                               "needs about"),
        ([run, str(tmp_path / "missing.jpg")], "missing.jpg: no such image file"),
        ([run, str(tmp_path / "junk.jpg")], "junk.jpg: not a readable image"),
        ([str(tmp_path / "nothing"), img], "nothing: no such weights file or run directory"),
        ([str(tmp_path / "empty_run"), img], "not a run directory (no config.yaml)"),
        ([str(tmp_path / "junk.pth"), img], "junk.pth: "),
        ([str(resnet50_file[0]), img, "--arch", "resnet5O"], "--arch 'resnet5O' is not a model name; valid: "),
        ([str(resnet50_file[0]), img], "read as resnext50_32x4d; give --arch the file's architecture"),
        ([run, img, "--topk", "0"], "--topk 0: must be at least 1"),
        ([run], "the following arguments are required: images"),
    ]
    for argv, expect in cases:
        with pytest.raises(SystemExit) as exit_info:
            predict.main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, argv
        assert expect in err and len(err.strip().splitlines()) == 1, (argv, err)
    (tmp_path / "run" / "checkpoints" / "last.pt").unlink()
    res = tool("predict", run, img)  # as a user meets it: one line, exit code 2, no traceback
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip() == (f"error: {run}: no checkpoints/last.pt in this run directory "
                                  "(it has checkpoints/best.pt: --checkpoint best)")


def test_a_checkpoint_copied_out_of_its_run_predicts_as_the_run(tmp_path, images, capsys):
    """The engine's checkpoints describe their input (recipe, data config, class names): last.pt copied
    anywhere gives the run directory's top-k, names included. The control, the same weights without that
    description, falls back to the family's preprocessing and prints other numbers."""
    from runs import train

    run = tmp_path / "run"
    res = train(run, "trainer.epochs=1", "trainer.max_steps_per_epoch=2")
    assert res.returncode == 0, res.stderr[-2000:]
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["described"]["recipe"] == "resnext29_demo_digits"
    assert state["described"]["class_names"] == [str(i) for i in range(10)]
    away = tmp_path / "elsewhere" / "my_last.pt"
    away.parent.mkdir()
    torch.save(state, away)
    bare = tmp_path / "elsewhere" / "bare.pt"
    torch.save({k: v for k, v in state.items() if k != "described"}, bare)
    outs = {}
    for name, path in (("run", run), ("copy", away), ("bare", bare)):
        predict.main([str(path), *map(str, images), "--topk", "3"])
        outs[name] = capsys.readouterr().out.splitlines()
    assert outs["copy"][0] == "model: my_last.pt (resnext29_demo_digits), 10 classes"
    assert outs["copy"][1:] == outs["run"][1:]
    preds = parse_predictions("\n".join(outs["copy"]))
    assert all(name == str(i) for top in preds.values() for _, i, name in top)
    assert outs["bare"][1:] != outs["run"][1:]
    # evaluate too: the copy measures what the run directory measures, on the data its description names
    from resnext import evaluate

    results = []
    for path in (run, away):
        evaluate.main([str(path)])
        results.append(json.loads(capsys.readouterr().out.splitlines()[-1]))
    assert results[0].pop("weights") != results[1].pop("weights") and results[0] == results[1]
    assert results[0]["samples"] == 359


def test_folders_and_globs_and_csv_or_json_output(tmp_path, images, resnet50_file, capsys):
    """A folder stands for its images (recursively, sorted), a quoted glob for its matches; --out writes the
    same predictions as CSV rows (image, rank, probability, class, name) or JSON, by suffix."""
    import csv
    import shutil

    path, _ = resnet50_file
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(images[0], folder / "b.jpg")
    shutil.copy(images[1], folder / "sub" / "a.JPG")
    (folder / "notes.txt").write_text("not an image")
    args = [str(path), str(folder), str(tmp_path / "ph*" / "*.jpg"), "--arch", "resnet50", "--topk", "2"]
    predict.main([*args, "--out", str(tmp_path / "out" / "p.csv")])
    printed = parse_predictions(capsys.readouterr().out)
    assert list(printed) == [str(folder / "b.jpg"), str(folder / "sub" / "a.JPG")]  # the glob's match: once
    with open(tmp_path / "out" / "p.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["image"], r["rank"]) for r in rows] == [(img, str(k)) for img in printed for k in (1, 2)]
    for r in rows:
        p, i, name = printed[r["image"]][int(r["rank"]) - 1]
        assert float(r["probability"]) == pytest.approx(p, abs=1e-4) and int(r["class"]) == i and r["name"] == name
    predict.main([*args, "--out", str(tmp_path / "p.json")])
    capsys.readouterr()
    got = json.loads((tmp_path / "p.json").read_text())
    assert [g["image"] for g in got] == list(printed)
    assert [[t["class"] for t in g["top"]] for g in got] == [[i for _, i, _ in printed[k]] for k in printed]
    for argv, expect in (([str(path), str(tmp_path / "out"), "--arch", "resnet50"], "a folder without images"),
                         ([str(path), str(tmp_path / "none*.jpg"), "--arch", "resnet50"], "no file matches"),
                         ([str(path), str(images[0]), "--out", str(tmp_path / "p.txt")], "give a file ending in .csv")):
        with pytest.raises(SystemExit) as e:
            predict.main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and expect in err and len(err.strip().splitlines()) == 1, err
