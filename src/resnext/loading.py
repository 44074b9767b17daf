"""Load a model from a run directory or a weights file (evaluate, predict, export): weights, config, input."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from .config import schema_for
from .data import normalization
from .data.cifar import META as CIFAR_META
from .data.cifar import cifar_class_names
from .data.imagenet_augment import interpolation
from .engine.checkpoint import safe_load
from .engine.rundir import RunDir
from .errors import CheckpointError, ConfigError
from .models import VARIANTS, Family, build_model, family_of
from .models.interop import load_torchvision, read_state_dict

DEFAULT_ARCH = "resnext50_32x4d"  # what a plain state dict is read as when no --arch is given


@dataclass(frozen=True)
class Preprocessing:
    """How the model expects an image: resize the shorter side, center crop, normalize."""

    resize: int  # shorter side after the resize
    crop: int  # side of the center crop fed to the model
    mean: tuple[float, float, float]  # per-channel RGB mean, [0, 1] units
    std: tuple[float, float, float]  # per-channel RGB standard deviation
    interpolation: str = "bilinear"  # resize filter: the run's data.interpolation (ImageNet-style data), else bilinear


@dataclass
class Source:
    """What a run directory or a weights file holds, read but not yet built into a model."""

    weights: Path  # the file the weights come from (a run's checkpoints/last.pt unless told otherwise)
    state_dict: dict[str, torch.Tensor]  # the weights, wrapper prefixes stripped
    stored: dict[str, Any] | None  # the architecture our checkpoints store (model_config); None in others
    cfg: DictConfig | None  # the run's config.yaml as written; None for a weights file outside a run
    what: str  # one-line description: "RUN (last.pt)" or "FILE"
    described: dict[str, Any] = field(default_factory=dict)  # what our checkpoints say of their input (describe())

    @property
    def record(self) -> dict[str, Any] | None:
        """The architecture: the checkpoint's model_config, else the run's model node, else None."""
        if self.stored:
            return dict(self.stored)
        return OmegaConf.to_container(self.cfg.model, resolve=True) if self.cfg is not None else None

    @property
    def classes(self) -> int:
        """The class count of the file's classifier (1000 for a headless file)."""
        sd = self.state_dict
        return int(sd["fc.weight"].shape[0]) if "fc.weight" in sd else 1000


@dataclass
class Loaded:
    """A model with weights, in eval mode on the CPU, and what it came from."""

    model: nn.Module
    what: str  # one-line description: "RUN (last.pt)" or "FILE as ARCH"
    data: DictConfig | None  # the run's data config (or the one its checkpoint carries); None for a weights file
    family: Family  # the model's family (input size and normalisation of a weights file)
    class_names: list[str] | None = None  # names by class index, as the checkpoint carries them

    @property
    def num_classes(self) -> int:
        return int(self.model.fc.out_features)

    def preprocessing(self, crop: int | None = None) -> Preprocessing:
        """The run's evaluation transform; for a weights file the family's (the model cards' for ImageNet)."""
        d, filt = self.data, "bilinear"
        if d is not None:
            stats = normalization(str(d.dataset))
            resize, size = int(d.val_resize), int(d.val_crop)
            if str(d.dataset) == "imagenet":  # the filter its val loader resized with (bicubic in paper recipes)
                filt = interpolation(d)
        else:
            spec = self.family.input
            stats, resize, size = (spec.mean, spec.std), spec.resize, spec.size
        if crop is not None:  # keep the source's resize/crop ratio
            resize, size = max(crop, round(crop * resize / size)), crop
        return Preprocessing(resize, size, *stats, filt)


#: Which checkpoint of a run directory a tool loads: "last" (the final model, what a finished run
#: reports against the paper) unless "best" (the epoch with the lowest val top-1 error, i.e. chosen on
#: the evaluation set itself) is asked for.
CHECKPOINTS = ("last", "best")


def checkpoint_of(run_dir: Path, which: str = "last") -> Path:
    """checkpoints/last.pt (default) or checkpoints/best.pt of a run directory; CheckpointError if absent."""
    if which not in CHECKPOINTS:
        raise CheckpointError(f"checkpoint {which!r} is not valid; choose one of {', '.join(CHECKPOINTS)}")
    path = RunDir(run_dir).checkpoint(which)
    if not path.is_file():
        others = [c for c in CHECKPOINTS if c != which and RunDir(run_dir).checkpoint(c).is_file()]
        hint = f" (it has checkpoints/{others[0]}.pt: --checkpoint {others[0]})" if others else ""
        raise CheckpointError(f"{run_dir}: no checkpoints/{which}.pt in this run directory{hint}")
    return path


def typed_config(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """A run's config on the schema (its model family's node) with ``key=value`` overrides applied."""
    from .compose import explain

    typed = schema_for(cfg.model)
    try:
        typed.merge_with({k: v for k, v in cfg.items() if k != "model"})
        typed.merge_with(OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))
    except Exception as e:  # an unknown key or a bad value, named by explain()
        raise ConfigError(explain(e)) from None
    return typed


def open_source(path: str | Path, checkpoint: str = "last") -> Source:
    """Read a run directory (config.yaml and its ``checkpoint``: checkpoints/last.pt unless "best") or a
    weights file; a file inside a run directory (RUN/checkpoints/X.pt) brings that run's config.yaml."""
    path = Path(path)
    cfg = None
    if path.is_dir():
        if not RunDir(path).is_run():
            raise ConfigError(f"{path}: not a run directory (no config.yaml); give a run directory or a weights file")
        cfg = RunDir(path).saved_config()
        weights = checkpoint_of(path, checkpoint)
        what = f"{path.name} ({weights.name})"
    elif path.is_file():
        weights, what = path, path.name
        run = RunDir.of_weights(path)
        if run is not None:
            cfg, what = run.saved_config(), f"{run.path.name} ({path.name})"
    else:
        raise CheckpointError(f"{path}: no such weights file or run directory")
    state = safe_load(weights)
    described = state.get("described") if isinstance(state.get("described"), dict) else {}
    if cfg is None and described.get("data") and state.get("model_config"):  # copied out of its run directory
        cfg = OmegaConf.create({"name": described.get("recipe") or "", "model": state["model_config"],
                                "data": described["data"]})
        what = f"{what} ({described.get('recipe') or 'its own description'})"
    return Source(weights, read_state_dict(state), state.get("model_config") or None, cfg, what, described)


def instantiate(spec: str | Mapping[str, Any], source: Source, hint: str = "", **kwargs: Any) -> nn.Module:
    """The model ``spec`` describes (see resnext.models.build_model) holding the source's weights, strictly.

    Built on the meta device (no random init: minutes for the big IG models) and the file's tensors
    assigned; a file for another architecture is a CheckpointError of one line.
    """
    try:
        with torch.device("meta"):
            model = build_model(spec, **kwargs)
        with warnings.catch_warnings():  # strict key/shape check; copies onto meta tensors are no-ops
            warnings.simplefilter("ignore", UserWarning)
            load_torchvision(model, source.state_dict)
        model.load_state_dict(source.state_dict, strict=True, assign=True)
    except ValueError as e:
        raise CheckpointError(f"{source.weights}: {e}{hint}") from None
    return model.float().eval()


def load_model(path: str | Path, arch: str | None = None, checkpoint: str = "last") -> Loaded:
    """The model a run directory or a weights file holds, its weights loaded strictly.

    A run directory brings its config.yaml and checkpoints/last.pt (``checkpoint="best"``: best.pt). A
    weights file (ours, torchvision's or timm's layout) uses the architecture stored in it (our checkpoints),
    else the variant ``arch`` (default resnext50_32x4d), with the class count of its classifier.
    """
    src = open_source(path, checkpoint)
    rec = src.record
    if rec:
        spec: str | dict = rec if rec.get("num_classes") else {**rec, "num_classes": src.classes}
        model, what = instantiate(spec, src), src.what
    else:
        spec = arch or DEFAULT_ARCH
        if spec not in VARIANTS:
            raise ConfigError(f"--arch {spec!r} is not a model name; valid: {', '.join(sorted(VARIANTS))}")
        hint = f" (read as {spec}; give --arch the file's architecture)"
        model, what = instantiate(spec, src, hint, num_classes=src.classes), f"{src.what} as {spec}"
    names = src.described.get("class_names")
    names = [str(n) for n in names] if isinstance(names, list) and len(names) == src.classes else None
    return Loaded(model, what, src.cfg.data if src.cfg is not None else None, family_of(spec), names)


def imagenet_names() -> list[str]:
    """The 1000 ImageNet class names, in the class-index order of torchvision's weights."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def _folder_names(root: Path) -> list[str] | None:
    train = root / "train"
    if not train.is_dir():
        return None
    return sorted(e.name for e in os.scandir(train) if e.is_dir() and not e.name.startswith("."))


def class_names(loaded: Loaded) -> list[str] | None:
    """Names by class index: those the checkpoint carries, else ImageNet's for 1000 classes, else the run's
    data set's, else None."""
    n, d = loaded.num_classes, loaded.data
    dataset = None if d is None else str(d.dataset)
    names = loaded.class_names
    if names is not None:
        pass
    elif n == 1000 and dataset in (None, "imagenet", "synthetic"):
        names = imagenet_names()
    elif dataset == "digits":
        names = [str(i) for i in range(10)]
    elif dataset in CIFAR_META and d.root:
        names = cifar_class_names(Path(str(d.root)).expanduser(), dataset)
    elif dataset == "imagenet" and d.root:
        names = _folder_names(Path(str(d.root)).expanduser())
    return names if names is not None and len(names) == n else None


def description(loaded: Loaded, crop: int | None = None) -> dict[str, Any]:
    """What an exported model expects and says, as plain values: the evaluation transform (shorter side,
    centre crop, filter, mean and std of [0, 1] RGB), the class names and where it came from."""
    p = loaded.preprocessing(crop)
    return {"source": loaded.what, "resize": p.resize, "crop": p.crop, "interpolation": p.interpolation,
            "mean": list(p.mean), "std": list(p.std), "input": "RGB in [0, 1], normalized, N x 3 x crop x crop",
            "class_names": class_names(loaded)}
