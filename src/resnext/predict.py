"""`python -m resnext.predict WEIGHTS_OR_RUN_DIR IMAGE [IMAGE ...]`: top-5 classes with probabilities.

Preprocessing as the model cards say: bilinear resize of the shorter side to 256 (crop fraction
0.875), center crop 224, ImageNet mean/std. 1000-class models print ImageNet class names (from the
metadata torchvision ships; nothing is downloaded); others print class indices.
"""

from __future__ import annotations

import argparse
import sys

import torch
from PIL import Image, UnidentifiedImageError
from torchvision import transforms as T

from .compose import fail
from .data.imagenet_folder import MEAN, STD
from .engine.checkpoint import CheckpointError
from .loading import load_model


def imagenet_names() -> list[str]:
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def preprocess(size: int = 224, crop_fraction: float = 0.875) -> T.Compose:
    return T.Compose([T.Resize(round(size / crop_fraction), interpolation=T.InterpolationMode.BILINEAR),
                      T.CenterCrop(size), T.ToTensor(), T.Normalize(MEAN, STD)])


@torch.no_grad()
def predict(model: torch.nn.Module, images: list[str], topk: int = 5, size: int = 224):
    """[(image, [(label, probability), ...]), ...] best first."""
    tf = preprocess(size)
    classes = model.fc.out_features
    names = imagenet_names() if classes == 1000 else [f"class {i}" for i in range(classes)]
    out = []
    for path in images:
        try:
            with Image.open(path) as im:
                x = tf(im.convert("RGB")).unsqueeze(0)
        except (OSError, UnidentifiedImageError) as e:
            raise CheckpointError(f"{path}: not a readable image ({type(e).__name__})") from None
        probs = model(x).softmax(dim=1)[0]
        p, i = probs.topk(min(topk, classes))
        out.append((path, [(names[k], float(v)) for k, v in zip(i.tolist(), p)]))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m resnext.predict", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", help="run directory, or a weights file (ours, torchvision's or timm's layout)")
    ap.add_argument("images", nargs="+", help="image files")
    ap.add_argument("--arch", default=None, help="model name for a plain state dict (default resnext50_32x4d)")
    ap.add_argument("--topk", type=int, default=5, help="classes to print per image")
    ap.add_argument("--size", type=int, default=224, help="center crop side")
    args = ap.parse_args(argv)
    try:
        model, what = load_model(args.weights, args.arch)
        results = predict(model, args.images, args.topk, args.size)
    except CheckpointError as e:
        fail(str(e))
    print(f"model: {what}")
    for path, top in results:
        print(path)
        for name, p in top:
            print(f"  {p:8.4f}  {name}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
