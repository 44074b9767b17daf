"""Start a model from weights (ours, torchvision's or timm's layout; a file, a URL or a torchvision name),
replacing a differing head."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import torch
from torch import nn

from .interop import read_state_dict

HEAD = ("fc.weight", "fc.bias")  # the classifier: the only tensors allowed to differ


URL_SCHEMES = ("http://", "https://", "file://")
TORCHVISION = "torchvision:"  # torchvision:resnext50_32x4d (its DEFAULT weights) or torchvision:ENUM.NAME


def cached_download(url: str) -> Path:
    """The file at ``url`` in torch.hub's cache (``$TORCH_HOME/hub/checkpoints/<file name>``, where
    torchvision's own weights land), downloaded with torch.hub's function if it is not there yet."""
    name = os.path.basename(urllib.parse.urlparse(url).path)
    if not name:
        raise ValueError(f"{url}: the URL names no file")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / name
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(cached), progress=False)
        except (OSError, ValueError) as e:  # urllib's URLError is an OSError: offline, refused, missing
            why = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
            raise ValueError(f"cannot download {url} ({why}) and it is not in the cache {cached}; put the "
                             "file there, or give a local path") from None
    return cached


def weights_file(spec: str | os.PathLike) -> Path:
    """The local file ``spec`` names: a path; a URL (http, https, file), fetched into torch.hub's cache; or
    ``torchvision:NAME``, a torchvision model's DEFAULT weights or a weights enum value, from its URL."""
    text = str(spec)
    if text.startswith(TORCHVISION):
        from torchvision.models import get_model_weights, get_weight

        name = text[len(TORCHVISION):]
        try:
            weights = get_weight(name) if "." in name else get_model_weights(name).DEFAULT
        except (KeyError, ValueError, AttributeError):
            raise ValueError(f"{text}: not a torchvision model or weights name (e.g. torchvision:resnext50_32x4d, "
                             "torchvision:ResNeXt50_32X4D_Weights.IMAGENET1K_V1)") from None
        return cached_download(weights.url)
    if text.startswith(URL_SCHEMES):
        return cached_download(text)
    if not os.path.isfile(text):
        raise ValueError(f"{text}: no such weights file (give a file, a URL or torchvision:NAME)")
    return Path(text)


def _read(spec: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = weights_file(spec)
    try:
        return read_state_dict(path)
    except Exception as e:  # unreadable, not a state dict, or a pickle that a weights-only load refuses
        first = (str(e).strip().splitlines() or [""])[0][:120]
        raise ValueError(f"{path}: not a loadable weights file ({type(e).__name__}: {first})") from None


def init_from(model: nn.Module, path: str | os.PathLike) -> str:
    """Load the weights of ``path`` into ``model``; a classifier of another class count stays fresh.

    ``path`` (a file, a URL or torchvision:NAME: ``weights_file``) holds one of our checkpoints (the state
    dict under "model"), or a torchvision or timm state dict (same layer names). When only fc.weight/fc.bias differ in shape, or the file has no
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
