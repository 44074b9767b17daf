"""torch.hub entry points: torch.hub.load(<clone>, "resnext50_32x4d", source="local"[, weights=PATH, num_classes=N]).

Every name of resnext.models.VARIANTS is an entry point (torch.hub.list shows exactly those).
``weights`` is a local file in our layout (a checkpoint with "model"), torchvision's or timm's,
loaded strictly (num_classes defaults to the file's classifier); other keyword arguments go to the
model's constructor (num_classes, ...). No pretrained weights are published: ``pretrained=True``
raises resnext.errors.NoPublishedWeights (a ValueError) saying how to pass a weights file.
This clone's src/ is put first on sys.path, so the package need not be installed.
"""

import sys as _sys
from pathlib import Path as _Path

dependencies = ["torch", "torchvision"]

_SRC = str(_Path(__file__).resolve().parent / "src")
if _SRC not in _sys.path:
    _sys.path.insert(0, _SRC)

from resnext.errors import NoPublishedWeights as _NoPublishedWeights  # noqa: E402
from resnext.models import VARIANTS as _VARIANTS  # noqa: E402
from resnext.models import build_model as _build_model  # noqa: E402
from resnext.models.interop import load_torchvision as _load_torchvision  # noqa: E402
from resnext.models.interop import read_state_dict as _read_state_dict  # noqa: E402


def _entry_point(name: str):
    def entry(weights: str | None = None, pretrained: bool = False, **kwargs):
        if pretrained:
            raise _NoPublishedWeights(
                f"{name}: no pretrained weights are published for this project; pass a local weights file "
                f"(ours, torchvision's or timm's layout): torch.hub.load(REPO, {name!r}, source='local', "
                f"weights='PATH'), or load a run directory or file with resnext.loading.load_model(PATH)")
        sd = None if weights is None else _read_state_dict(weights)
        if sd is not None and "fc.weight" in sd:  # the file's class count, unless num_classes is given
            kwargs.setdefault("num_classes", int(sd["fc.weight"].shape[0]))
        model = _build_model(name, **kwargs)
        if sd is not None:
            _load_torchvision(model, sd)
        return model

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (f"{name} from resnext.models.VARIANTS, randomly initialized; weights=PATH loads a local "
                     f"state dict (ours, torchvision's or timm's layout) strictly; kwargs go to the constructor; "
                     f"pretrained=True raises NoPublishedWeights (none are published).")
    return entry


for _name in _VARIANTS:
    globals()[_name] = _entry_point(_name)
