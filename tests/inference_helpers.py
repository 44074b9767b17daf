"""Hand-made inputs for the inference tools' tests: run directories, weights files, images."""

from __future__ import annotations

import pickle
import subprocess
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image
from runs import PY, ROOT, env

from resnext.compose import compose_config
from resnext.models import build_model

# a tiny ResNeXt-29 (11 layers, 2x4d): builds and runs in milliseconds
TINY_MODEL = ["model=cifar_resnext", "model.depth=11", "model.cardinality=2", "model.width=4"]
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_run(run_dir: Path, *overrides: str, seed: int = 0, with_model_config: bool = True) -> torch.nn.Module:
    """A run directory as training leaves it: resolved config.yaml and checkpoints/last.pt (and best.pt).

    The config is composed from conf/ with ``overrides`` like a real run; the checkpoint holds a
    randomly initialized model (seeded) under "model" and, as the engine writes it, "model_config".
    Returns the model (eval mode) whose weights were saved.
    """
    cfg = compose_config(list(overrides))
    rec = OmegaConf.to_container(cfg.model, resolve=True)
    rec.pop("init_from", None)
    if not rec["num_classes"]:
        rec["num_classes"] = 10
    torch.manual_seed(seed)
    model = build_model(rec).eval()
    with torch.no_grad():  # BN statistics away from 0/1, so eval-mode BN is exercised
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    state = {"model": model.state_dict(), "epoch": 3}
    if with_model_config:
        state["model_config"] = rec
    torch.save(state, run_dir / "checkpoints" / "last.pt")
    torch.save(state, run_dir / "checkpoints" / "best.pt")
    return model


def write_cifar10_meta(root: Path) -> None:
    """The official CIFAR-10 batches.meta (a Python 2 pickle: bytes keys and names)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    meta = {b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_cases_per_batch": 10000}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def write_images(folder: Path) -> list[Path]:
    """Three JPEGs of different sizes, aspect ratios and modes (RGB, grayscale, portrait)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    specs = [((300, 200), "RGB"), ((180, 180), "L"), ((120, 260), "RGB")]
    paths = []
    for i, ((w, h), mode) in enumerate(specs):
        shape = (h, w, 3) if mode == "RGB" else (h, w)
        ramp = np.linspace(0, 255, w)[None, :, None] if mode == "RGB" else np.linspace(0, 255, w)[None, :]
        pixels = (0.5 * rng.integers(0, 256, shape) + 0.5 * ramp).astype(np.uint8)
        paths.append(folder / f"img{i}.jpg")
        Image.fromarray(pixels).save(paths[-1], quality=90)  # 2-D: grayscale, 3-D: RGB
    return paths


def reference_input(path: Path, resize: int, crop: int, mean, std, filt=Image.BILINEAR) -> torch.Tensor:
    """The model cards' preprocessing written out by hand with PIL and NumPy (1, 3, crop, crop); ``filt``:
    PIL's resize filter (the cards' bilinear unless a run resized with another)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        short, long = min(w, h), max(w, h)
        new_long = int(resize * long / short)
        size = (resize, new_long) if w <= h else (new_long, resize)
        im = im.resize(size, filt)
    a = np.asarray(im, dtype=np.float32) / 255.0
    top, left = int(round((a.shape[0] - crop) / 2.0)), int(round((a.shape[1] - crop) / 2.0))
    a = (a[top:top + crop, left:left + crop] - np.array(mean, np.float32)) / np.array(std, np.float32)
    return torch.from_numpy(a.transpose(2, 0, 1).copy()).unsqueeze(0)


def tool(module: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m resnext.MODULE ARGS`` from the repository root, as a user runs it."""
    return subprocess.run([PY, "-m", f"resnext.{module}", *map(str, args)], capture_output=True, text=True,
                          env=env(), cwd=ROOT, timeout=timeout)


def parse_predictions(stdout: str) -> dict[str, list[tuple[float, int, str]]]:
    """predict's output as {image: [(probability, class index, name), ...]}."""
    out: dict[str, list[tuple[float, int, str]]] = {}
    current = None
    for line in stdout.splitlines()[1:]:  # the first line describes the model
        if line.startswith("  "):
            p, i, *name = line.split(None, 2)
            out[current].append((float(p), int(i), name[0] if name else ""))
        else:
            current = line
            out[current] = []
    return out
