"""The benchmark tool runs each subcommand at CI size and its comparisons are fair (same first loss)."""

from __future__ import annotations

import json
import subprocess

import pytest
from runs import PY, ROOT, env


def bench(tmp_path, *args, timeout=600):
    out = tmp_path / "r.json"
    res = subprocess.run([PY, "-m", "resnext.bench", "--out", str(out), *args], capture_output=True, text=True,
                         env=env(), cwd=tmp_path, timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(out.read_text()), res.stdout


@pytest.mark.slow
def test_bench_train_smoke(tmp_path):
    result, stdout = bench(tmp_path, "train", "--model", "resnext29_8x64d", "--classes", "10", "--batch", "4", "--size", "8",
                           "--precision", "fp32,bf16", "--memory-format", "nchw,channels_last", "--steps", "1",
                           "--repeats", "1", "--device", "cpu")
    rows = result["rows"]
    assert [(r["precision"], r["format"]) for r in rows] == [
        ("fp32", "nchw"), ("fp32", "channels_last"), ("bf16", "nchw"), ("bf16", "channels_last")]
    for r in rows:
        assert r["ours_images_per_s"] > 0 and r["ref_images_per_s"] > 0
        assert r["ratio"] == pytest.approx(r["samples"]["ours"]["all_images_per_s"][0]
                                           / r["samples"]["reference"]["all_images_per_s"][0])  # one round
        assert r["first_loss_ours"] == pytest.approx(r["first_loss_ref"], rel=1e-6)  # same model, same batch
    env_rec = result["settings"]["environment"]
    assert env_rec["torch"] and env_rec["device"] == "cpu"
    assert "| resnext29_8x64d |" in stdout


def test_bench_train_torchvision_reference_same_loss(tmp_path):
    # ImageNet family: the reference is torchvision's own ResNet definition with our weights loaded
    result, _ = bench(tmp_path, "train", "--model", "resnet50", "--batch", "2", "--size", "64", "--precision",
                      "fp32", "--memory-format", "nchw", "--steps", "1", "--repeats", "1", "--device", "cpu")
    r = result["rows"][0]
    assert r["first_loss_ours"] == pytest.approx(r["first_loss_ref"], rel=1e-6)


def test_bench_train_times_ghost_bn_against_plain_bn(tmp_path):
    result, stdout = bench(tmp_path, "train", "--model", "resnext29_8x64d", "--classes", "10", "--batch", "4", "--size", "8",
                           "--precision", "fp32", "--memory-format", "channels_last", "--steps", "1",
                           "--repeats", "1", "--device", "cpu", "--bn-batch", "2")
    r = result["rows"][0]
    assert r["ghost_images_per_s"] > 0
    assert r["ghost_vs_plain"] == pytest.approx(r["ghost_images_per_s"] / r["ours_images_per_s"])  # one round
    assert r["plain_saved_mb_per_image"] > 0 and 0.9 < r["ghost_memory_vs_plain"] < 1.3
    assert "ghost BN / plain BN" in stdout and "ghost / plain saved activations" in stdout


@pytest.mark.slow
def test_bench_train_times_the_methods_beyond_the_paper_against_the_plain_engine(tmp_path):
    result, stdout = bench(tmp_path, "train", "--model", "resnext29_8x64d", "--classes", "10", "--batch", "4",
                           "--size", "8", "--precision", "fp32", "--memory-format", "nchw", "--steps", "1",
                           "--repeats", "1", "--device", "cpu", "--with", "data.mixup_alpha=0.2 trainer.ema_decay=0.9")
    r = result["rows"][0]
    assert r["with"] == "data.mixup_alpha=0.2 trainer.ema_decay=0.9" and r["with_images_per_s"] > 0
    assert r["with_vs_plain"] == pytest.approx(r["with_images_per_s"] / r["ours_images_per_s"])  # one round
    assert "with --with / without" in stdout


@pytest.mark.slow
def test_bench_cifar_smoke(tmp_path):
    result, _ = bench(tmp_path, "cifar", "--images", "512", "--batch", "64", "--repeats", "1", "--workers", "1",
                      "--device", "cpu")
    names = [r["loader"] for r in result["rows"]]
    assert names == ["ours (on-device)", "torchvision reference"]
    assert result["rows"][1]["ratio"] == 1.0 and result["rows"][0]["images_per_s"] > 0
    assert result["settings"]["train_images"] == 512


@pytest.mark.slow
def test_bench_e2e_counts_the_images_it_trained(tmp_path):
    """An epoch of the data (1,437 digits at batch 512: 2 steps) shorter than --steps 3: the real run goes on
    into the next epoch and every figure divides the images actually stepped on (counted by the trainer)
    by the time taken. It once counted batch x --steps whatever was trained, and overstated by 2.86x."""
    result, stdout = bench(tmp_path, "e2e", "+recipe=resnext29_demo_digits", "model.cardinality=2", "model.width=2",
                           "model.depth=11", "data.image_size=8", "data.pad=1",  # 8 px, 3 blocks: 20 s, not 170
                           "data.batch_size=512", "--steps", "3", "--repeats", "2")
    rows = {r["input"]: r for r in result["rows"]}
    assert set(rows) == {"end-to-end", "synthetic"} and rows["synthetic"]["ratio"] == 1.0
    settings = result["settings"]
    assert settings["dataset"] == "digits" and settings["steps_per_epoch"] == 2
    assert settings["steps_trained"]["real"] == [4, 4, 4]  # warm-up + 2 repeats, each 2 epochs of 2 steps
    assert settings["steps_trained"]["synth"] == [3, 3, 3]
    assert rows["end-to-end"]["images"] == [4 * 512, 4 * 512] and rows["synthetic"]["images"] == [3 * 512, 3 * 512]
    for r in rows.values():
        assert r["images_per_s"] == pytest.approx(r["images"][0] / r["seconds"], rel=0.5)
    assert "| end-to-end |" in stdout


def test_bench_help_lists_subcommands():
    res = subprocess.run([PY, "-m", "resnext.bench", "--help"], capture_output=True, text=True, cwd=ROOT, env=env())
    assert res.returncode == 0
    for cmd in ("train", "data", "cifar", "e2e"):
        assert cmd in res.stdout


def test_the_tools_own_options_go_anywhere_and_precision_defaults_to_the_trainers(tmp_path, capsys):
    from resnext.bench.__main__ import main

    main(["train", "--batch", "8", "--out", str(tmp_path / "r.json"), "--dry-run"])
    line = capsys.readouterr().out.strip()
    assert line.startswith("bench train: ") and f"out={tmp_path / 'r.json'}" in line and "batch=8" in line
    assert "precision=auto" in line  # the trainer's default: bf16 on a GPU, fp32 on the CPU
    main(["--dry-run", "e2e", "--out=x.json"])
    assert "out=x.json" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["train", "--precision", "fp33", "--device", "cpu", "--out", str(tmp_path / "r.json")])
    assert e.value.code == 2
    assert capsys.readouterr().err == ("error: --precision 'fp33' is not valid; choose from auto, fp32, bf16, fp16 "
                                       "(comma list)\n")
    assert not (tmp_path / "r.json").exists()


def test_the_one_way_to_make_a_trainer_validates_as_train_py(tmp_path):
    """session.build (what the benchmarks and tests use) refuses what train.py refuses, before building."""
    from resnext.compose import compose_config
    from resnext.engine.dist import init_world
    from resnext.errors import ConfigError
    from resnext.session import build

    cfg = compose_config(["+recipe=resnext29_demo_digits", "data.pad=-3"])
    with pytest.raises(ConfigError, match="data.pad=-3 must be >= 0"):
        build(cfg, init_world("cpu"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_bench_data_counts_the_images_it_loaded_and_times_the_policies(tmp_path, capsys):
    """bench data on a real JPEG folder: each backend's rate is the images it actually loaded per second
    (an epoch of whole batches, counted from the batches), and --with times each backend again with the data
    overrides (here the V2 recipe's TrivialAugmentWide and random erasing), paired against itself without."""
    from resnext.bench.__main__ import main
    from resnext.data.tools import make_fake

    make_fake(tmp_path / "fk", 2, 11, 1, (64, 48))  # 22 training images: 5 batches of 4, 2 left over
    main(["data", str(tmp_path / "fk"), "--batch", "4", "--size", "32", "--workers", "1", "--repeats", "2",
          "--backends", "dali_cpu,torch", "--with", "data.auto_augment=ta_wide data.random_erase=0.1",
          "--out", str(tmp_path / "r.json")])
    result = json.loads((tmp_path / "r.json").read_text())
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == ["dali_cpu", "dali_cpu + with", "torch", "torch + with", "reference (ImageFolder + DataLoader)"]
    assert all(r["images"] == [20, 20] for r in rows.values())
    assert result["settings"]["with"] == {"data.auto_augment": "ta_wide", "data.random_erase": 0.1}
    for name in ("dali_cpu", "torch"):
        w = rows[f"{name} + with"]
        pairs = [a / b for a, b in zip(w["all_images_per_s"], rows[name]["all_images_per_s"], strict=True)]
        assert w["with_vs_without"] == pytest.approx(sum(pairs) / 2)  # the median of two rounds: their mean
    assert "with --with / without" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["data", str(tmp_path / "fk"), "--with", "auto_augment=ta_wide", "--out", str(tmp_path / "x.json")])
    assert e.value.code == 2 and "give data.KEY=VALUE with a data key" in capsys.readouterr().err


def test_the_parallel_source_experiment_counts_what_each_source_delivered(tmp_path):
    """bench/dali_parallel_source.py (issue 19's measurement of DALI's worker-process external source): both
    sources deliver the same epoch of whole batches, each rate divides those images by its time, and the
    serial source's share of the training thread is part of that thread's time."""
    import importlib.util

    from resnext.data.tools import make_fake

    spec = importlib.util.spec_from_file_location("dali_parallel_source", ROOT / "bench" / "dali_parallel_source.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    make_fake(tmp_path / "fk", 2, 19, 1, (64, 48))  # 38 images: 4 batches of 8, 6 left out
    assert probe.main(["--root", str(tmp_path / "fk"), "--batch", "8", "--size", "32", "--threads", "1",
                       "--workers", "1", "--rounds", "1", "--out", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    serial, parallel = result["rows"]["serial"][0], result["rows"]["parallel"][0]
    assert serial["images"] == parallel["images"] == 32
    assert 0 < serial["source_ms_per_batch"] <= serial["thread_ms_per_batch"]
    assert result["summary"]["parallel_vs_serial_images_per_s"] == pytest.approx(
        parallel["images_per_s"] / serial["images_per_s"])
