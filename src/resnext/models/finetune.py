"""Start a model from a weights file (ours, torchvision's or timm's layout), replacing a differing head."""

from __future__ import annotations

import os

import torch
from torch import nn

from .interop import read_state_dict

HEAD = ("fc.weight", "fc.bias")


def init_from(model: nn.Module, path: str | os.PathLike) -> str:
    """Load every weight of ``path`` into ``model``; a classifier of another class count is kept fresh.

    Returns the one log line saying what happened. Any other mismatch (a file for a different
    architecture) raises ValueError with one line.
    """
    try:
        sd = read_state_dict(path)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such weights file") from None
    except Exception as e:  # unreadable or unsafe pickle
        raise ValueError(f"{path}: not a loadable weights file ({type(e).__name__})") from None
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or [k for k in shapes if k not in HEAD]:
        first = (missing or unexpected or [k for k in shapes if k not in HEAD])[0]
        raise ValueError(f"{path}: weights are for another architecture ({len(missing)} missing, "
                         f"{len(unexpected)} unexpected, {len(shapes)} differently shaped tensors; first: {first})")
    replaced = [k for k in shapes if k in HEAD]
    with torch.no_grad():
        for k, v in own.items():
            if k not in replaced:
                v.copy_(sd[k])
    if replaced:
        old, new = sd["fc.weight"].shape[0], own["fc.weight"].shape[0]
        return f"init_from {path}: backbone loaded, classifier replaced ({old} -> {new} classes)"
    return f"init_from {path}: all weights loaded"
