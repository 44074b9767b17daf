"""`python -m resnext.predict WEIGHTS_OR_RUN_DIR IMAGE [IMAGE ...]`: top-k classes with probabilities.

    python -m resnext.predict ig_resnext101_32x8d.pth cat.jpg --arch ig_resnext101_32x8d
    python -m resnext.predict outputs/resnext29_16x64d_cifar10 plane.png --topk 3

A weights file (ours, torchvision's or timm's layout) is preprocessed as the model cards say:
bilinear resize of the shorter side to 256 (crop fraction 0.875), center crop 224, ImageNet
mean/std (CIFAR networks: 32x32, CIFAR statistics). A run directory uses its own evaluation
transform (its val_resize, val_crop and resize filter, bicubic in the paper recipes) and its final
model, checkpoints/last.pt (--checkpoint best: best.pt). 1000-class models print ImageNet class names
(the metadata torchvision ships; nothing is downloaded); others print the class index, and the class name when the run's data names it.
Output: one line per image, then one line per class: probability, class index, name.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms as T

from .errors import OneLineParser, UserError, fail, printable
from .footprint import check_size
from .loading import CHECKPOINTS, Loaded, Preprocessing, class_names, load_model


def transform(p: Preprocessing) -> T.Compose:
    """Shorter-side resize (antialiased, the run's filter), center crop, tensor in [0, 1], normalize."""
    return T.Compose([T.Resize(p.resize, interpolation=T.InterpolationMode(p.interpolation)), T.CenterCrop(p.crop),
                      T.ToTensor(), T.Normalize(p.mean, p.std)])


def read_image(path: str, tf: T.Compose) -> torch.Tensor:
    """One preprocessed image (1, 3, crop, crop); a missing or unreadable file is a UserError."""
    if not Path(path).is_file():
        raise UserError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:  # more pixels than PIL's bomb limit: DecompressionBombError, before decoding
            return tf(im.convert("RGB")).unsqueeze(0)
    except Image.DecompressionBombError as e:
        raise UserError(f"{path}: too large an image to decode ({e}); downscale it first") from None
    except OSError as e:  # PIL's UnidentifiedImageError and truncated files are OSErrors
        raise UserError(f"{path}: not a readable image ({type(e).__name__})") from None


@torch.no_grad()
def predict(loaded: Loaded, images: list[str], topk: int = 5,
            crop: int | None = None) -> list[tuple[str, list[tuple[float, int]]]]:
    """[(image, [(probability, class index), ...] best first), ...]."""
    tf = transform(loaded.preprocessing(crop))
    k = min(topk, loaded.num_classes)
    out = []
    for path in images:
        probs = loaded.model(read_image(path, tf)).softmax(dim=1)[0]
        p, i = probs.topk(k)
        out.append((path, list(zip(p.tolist(), i.tolist(), strict=True))))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = OneLineParser(prog="python -m resnext.predict", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", help="run directory, or a weights file (ours, torchvision's or timm's layout)")
    ap.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    ap.add_argument("--arch", default=None, help="model name for a plain state dict (default resnext50_32x4d)")
    ap.add_argument("--checkpoint", choices=CHECKPOINTS, default="last",
                    help="a run directory's checkpoint: last (the final model, default) or best")
    ap.add_argument("--topk", type=int, default=5, help="classes to print per image (default 5)")
    ap.add_argument("--image-size", type=int, default=None,
                    help="center-crop side (default: the run's val_crop; 224, or 32 for CIFAR networks)")
    args = ap.parse_args(argv)
    if args.topk < 1:
        fail(f"--topk {args.topk}: must be at least 1")
    if args.image_size is not None and args.image_size < 1:
        fail(f"--image-size {args.image_size}: must be at least 1")
    try:
        loaded = load_model(args.weights, args.arch, args.checkpoint)
        if args.image_size is not None:  # a side the memory cannot hold: one line, not the kernel's kill
            check_size(loaded.model, args.image_size, 1, f"--image-size {args.image_size}")
        results = predict(loaded, args.images, args.topk, args.image_size)
        names = class_names(loaded)
    except UserError as e:
        fail(str(e))
    assumed = ""
    if loaded.data is None:  # a weights file that describes no input (torchvision's, timm's): say what we assume
        pre = loaded.preprocessing(args.image_size)
        assumed = (f"; the file records no preprocessing, assumed: shorter side {pre.resize} ({pre.interpolation}), "
                   f"centre {pre.crop}, mean {', '.join(f'{v:.3f}' for v in pre.mean)}, "
                   f"std {', '.join(f'{v:.3f}' for v in pre.std)}")
    print(f"model: {loaded.what}, {loaded.num_classes} classes{assumed}", flush=True)
    for path, top in results:
        print(printable(path))
        for p, i in top:
            print(f"  {p:.4f}  {i:4d}  {printable(names[i]) if names else ''}".rstrip())


if __name__ == "__main__":
    main()
