"""A trained model from a run directory or a weights file, for the inference tools (predict, export)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf
from torch import nn

from .engine.checkpoint import CheckpointError, safe_load
from .models import MODELS, build_model, create_model
from .models.interop import load_torchvision, read_state_dict


def checkpoint_of(run_dir: Path) -> Path:
    for name in ("best.pt", "last.pt"):
        if (run_dir / "checkpoints" / name).is_file():
            return run_dir / "checkpoints" / name
    raise CheckpointError(f"{run_dir}: no checkpoints/best.pt or checkpoints/last.pt")


def load_model(path: str | Path, arch: str | None = None) -> tuple[nn.Module, str]:
    """(model in eval mode, what it is). A run dir brings its config; a file its model_config or ``arch``."""
    path = Path(path)
    if path.is_dir():
        if not (path / "config.yaml").is_file():
            raise CheckpointError(f"{path}: not a run directory (no config.yaml); give a run dir or a weights file")
        weights = checkpoint_of(path)
        state = safe_load(weights)
        rec = state.get("model_config") or dict(OmegaConf.load(path / "config.yaml").model)
        model, what = build_model(rec), f"{path.name} ({weights.name})"
    elif path.is_file():
        state = safe_load(path)
        rec = state.get("model_config")
        sd = read_state_dict(state)
        if rec:
            model, what = build_model(rec), path.name
        else:
            name = arch or "resnext50_32x4d"
            if name not in MODELS:
                raise CheckpointError(f"--arch {name!r} is not a model; valid: {', '.join(sorted(MODELS))}")
            classes = sd["fc.weight"].shape[0] if "fc.weight" in sd else 1000
            model, what = create_model(name, num_classes=classes), f"{path.name} as {name}"
    else:
        raise CheckpointError(f"{path}: no such weights file or run directory")
    try:
        load_torchvision(model, read_state_dict(state))
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return model.eval(), what
