"""torch.hub entry points: torch.hub.load(<this repo>, "resnext50_32x4d", source="local"[, weights=PATH]).

Every name of resnext.models.MODELS is an entry point; `weights` is a local file in our,
torchvision's or timm's layout, loaded strictly; other keyword arguments go to the constructor.
"""

import sys
from functools import partial
from pathlib import Path

dependencies = ["torch", "torchvision"]

_src = str(Path(__file__).resolve().parent / "src")
if _src not in sys.path:
    sys.path.insert(0, _src)

from resnext.models import MODELS, create_model  # noqa: E402
from resnext.models.interop import load_torchvision  # noqa: E402


def _entry(name: str, weights: str | None = None, **kwargs):
    model = create_model(name, **kwargs)
    if weights is not None:
        load_torchvision(model, weights)
    return model


for _name in MODELS:
    _fn = partial(_entry, _name)
    _fn.__doc__ = f"{_name} (resnext.models.MODELS); weights=PATH loads a local state dict strictly."
    globals()[_name] = _fn
