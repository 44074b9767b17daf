"""torchvision interoperability: load torchvision/timm ResNet-family weights into our models and back."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

# Prefixes that wrappers add in front of every key (DDP, torch.compile, some checkpoint formats).
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")


def read_state_dict(source: str | os.PathLike | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A plain state dict from a mapping or a file (loaded with weights_only=True).

    Accepts a bare state dict, or a checkpoint holding one under "model" or "state_dict".
    Wrapper prefixes ("module.", "_orig_mod.") are stripped.
    """
    sd = source if isinstance(source, Mapping) else torch.load(source, map_location="cpu", weights_only=True)
    if not isinstance(sd, Mapping):
        raise ValueError(f"{source}: expected a state dict, found {type(sd).__name__}")
    sd = dict(sd)
    for key in ("model", "state_dict"):
        if key in sd and isinstance(sd[key], Mapping):
            sd = dict(sd[key])
            break
    for prefix in _WRAPPER_PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def load_torchvision(model: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor]) -> nn.Module:
    """Load a torchvision (or timm) resnet/resnext/wide_resnet state dict into ``model``, strictly.

    Our layer names are torchvision's, so the mapping is the identity; a mismatch raises ValueError
    naming the first missing/unexpected keys or differing shapes.
    """
    sd = read_state_dict(source)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}")
        if shapes:
            k = shapes[0]
            parts.append(f"shape of {k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}")
        raise ValueError("weights do not fit this architecture: " + "; ".join(parts))
    model.load_state_dict(sd, strict=True)
    return model


def export_torchvision(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights as a torchvision-layout state dict (loads strictly into torchvision)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
