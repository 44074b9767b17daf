"""Start a model from a weights file (ours, torchvision's or timm's layout), replacing a differing head."""

from __future__ import annotations

import os

import torch
from torch import nn

from .interop import read_state_dict

HEAD = ("fc.weight", "fc.bias")  # the classifier: the only tensors allowed to differ


def _read(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such weights file")
    try:
        return read_state_dict(path)
    except Exception as e:  # unreadable, not a state dict, or a pickle that a weights-only load refuses
        first = (str(e).strip().splitlines() or [""])[0][:120]
        raise ValueError(f"{path}: not a loadable weights file ({type(e).__name__}: {first})") from None


def init_from(model: nn.Module, path: str | os.PathLike) -> str:
    """Load the weights of ``path`` into ``model``; a classifier of another class count stays fresh.

    ``path`` holds one of our checkpoints (the state dict under "model"), or a torchvision or timm
    state dict (same layer names). When only fc.weight/fc.bias differ in shape, or the file has no
    classifier at all (a headless backbone), everything else is loaded and the model's freshly
    initialized classifier is kept. Returns the one log line saying what happened. Any other
    mismatch (a file for a different architecture) raises ValueError with one line.
    """
    sd = _read(path)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    headless = sorted(missing) == sorted(HEAD)
    wrong = [k for k in missing + shapes if k not in HEAD] + unexpected
    if wrong or (missing and not headless):
        first = wrong[0] if wrong else missing[0]
        detail = (f"file {tuple(sd[first].shape)} vs model {tuple(own[first].shape)}" if first in shapes
                  else "not in the model" if first in unexpected else "not in the file")
        raise ValueError(f"{path}: weights are for another architecture ({len(missing)} missing, "
                         f"{len(unexpected)} unexpected, {len(shapes)} differently shaped tensors; "
                         f"first: {first}, {detail})")
    keep = set(HEAD) if (headless or shapes) else set()
    with torch.no_grad():
        for k, v in own.items():
            if k not in keep:
                v.copy_(sd[k])
    new = own["fc.weight"].shape[0] if "fc.weight" in own else None
    if headless:
        return f"init_from {path}: backbone loaded, file has no classifier; fresh classifier ({new} classes)"
    if shapes:
        return f"init_from {path}: backbone loaded, classifier replaced ({sd['fc.weight'].shape[0]} -> {new} classes)"
    return f"init_from {path}: all weights loaded"
