"""Inference tools' shared front end: WEIGHTS_OR_RUN_DIR -> model and its input, one-line user errors."""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from .data.cifar import CIFAR_MEAN, CIFAR_STD, DIGITS_MEAN, DIGITS_STD
from .data.imagenet_folder import MEAN, STD
from .engine.checkpoint import safe_load
from .errors import CheckpointError, UserError, fail
from .models import MODELS, CifarResNeXt, WideResNet, build_model, create_model
from .models.interop import load_torchvision, read_state_dict

DEFAULT_ARCH = "resnext50_32x4d"
CROP_FRACTION = 0.875  # the model cards' center crop: 224 of a 256 shorter side


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage mistakes end in one line on stderr and exit code 2 (no usage dump)."""

    def error(self, message: str) -> None:  # exits: fail() ends the process
        fail(f"{self.prog}: {message} (see --help)")


@dataclass(frozen=True)
class Preprocessing:
    """How the model expects an image: resize the shorter side, center crop, normalize."""

    resize: int  # shorter side after a bilinear resize
    crop: int  # side of the center crop fed to the model
    mean: tuple[float, float, float]  # per-channel RGB mean, [0, 1] units
    std: tuple[float, float, float]  # per-channel RGB standard deviation


@dataclass
class Loaded:
    """A model with weights, in eval mode on the CPU, and what it came from."""

    model: nn.Module
    what: str  # one-line description: "RUN (best.pt)" or "FILE as ARCH"
    data: DictConfig | None  # the run's data config; None for a weights file

    @property
    def num_classes(self) -> int:
        return int(self.model.fc.out_features)

    def preprocessing(self, crop: int | None = None) -> Preprocessing:
        """The run's evaluation transform; for a weights file the model cards' (CIFAR nets: 32x32)."""
        d = self.data
        if d is not None:
            stats = {"cifar10": (CIFAR_MEAN, CIFAR_STD), "cifar100": (CIFAR_MEAN, CIFAR_STD),
                     "digits": (DIGITS_MEAN, DIGITS_STD)}.get(str(d.dataset), (MEAN, STD))
            resize, size = int(d.val_resize), int(d.val_crop)
        elif isinstance(self.model, (CifarResNeXt, WideResNet)):
            stats, resize, size = (CIFAR_MEAN, CIFAR_STD), 32, 32
        else:
            stats, resize, size = (MEAN, STD), round(224 / CROP_FRACTION), 224
        if crop is not None:  # keep the source's resize/crop ratio
            resize, size = max(crop, round(crop * resize / size)), crop
        return Preprocessing(resize, size, *stats)


def checkpoint_of(run_dir: Path) -> Path:
    """checkpoints/best.pt of a run directory, else checkpoints/last.pt."""
    for name in ("best.pt", "last.pt"):
        if (run_dir / "checkpoints" / name).is_file():
            return run_dir / "checkpoints" / name
    raise UserError(f"{run_dir}: no checkpoints/best.pt or checkpoints/last.pt in this run directory")


def _read_checkpoint(path: Path) -> dict:
    try:
        return safe_load(path)
    except CheckpointError as e:
        raise UserError(str(e)) from None


def _run_config(run_dir: Path) -> DictConfig:
    try:
        cfg = OmegaConf.load(run_dir / "config.yaml")
    except Exception as e:
        raise UserError(f"{run_dir / 'config.yaml'}: unreadable config ({type(e).__name__}: {str(e)[:120]})") from None
    if not isinstance(cfg, DictConfig) or "model" not in cfg or "data" not in cfg:
        raise UserError(f"{run_dir / 'config.yaml'}: not a run config (needs model: and data: blocks)")
    return cfg


def _classes_in(sd: dict) -> int:
    return int(sd["fc.weight"].shape[0]) if "fc.weight" in sd else 1000


def load_model(path: str | Path, arch: str | None = None) -> Loaded:
    """The model a run directory or a weights file holds, its weights loaded strictly.

    A run directory brings its config.yaml and checkpoints/best.pt (else last.pt). A weights file
    (ours, torchvision's or timm's layout) uses the architecture stored in it (our checkpoints),
    else ``arch`` (default resnext50_32x4d), with the class count of its classifier.
    """
    path = Path(path)
    data = None
    if path.is_dir():
        if not (path / "config.yaml").is_file():
            raise UserError(f"{path}: not a run directory (no config.yaml); give a run directory or a weights file")
        cfg = _run_config(path)
        weights = checkpoint_of(path)
        state = _read_checkpoint(weights)
        sd = read_state_dict(state)
        rec = state.get("model_config") or OmegaConf.to_container(cfg.model, resolve=True)
        if not rec.get("num_classes"):  # 0 = "from the data": the classifier says how many
            rec = {**rec, "num_classes": _classes_in(sd)}
        what, data = f"{path.name} ({weights.name})", cfg.data
    elif path.is_file():
        state = _read_checkpoint(path)
        sd = read_state_dict(state)
        rec = state.get("model_config")
        name = arch or DEFAULT_ARCH
        if not rec and name not in MODELS:
            raise UserError(f"--arch {name!r} is not a model name; valid: {', '.join(sorted(MODELS))}")
        what = path.name if rec else f"{path.name} as {name}"
    else:
        raise UserError(f"{path}: no such weights file or run directory")
    try:
        with torch.device("meta"):  # no random init (minutes for the big IG models): all comes from the file
            model = build_model(rec) if rec else create_model(name, num_classes=_classes_in(sd))
        with warnings.catch_warnings():  # strict key/shape check; copies onto meta tensors are no-ops
            warnings.simplefilter("ignore", UserWarning)
            load_torchvision(model, sd)
        model.load_state_dict(sd, strict=True, assign=True)
    except KeyError as e:
        raise UserError(f"{path}: the model config lacks the key {e}") from None
    except ValueError as e:
        hint = "" if rec else f" (read as {name}; give --arch the file's architecture)"
        raise UserError(f"{path}: {e}{hint}") from None
    return Loaded(model.float().eval(), what, data)
