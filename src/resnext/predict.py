"""`python -m resnext.predict WEIGHTS_OR_RUN_DIR IMAGE|FOLDER|GLOB ...`: top-k classes with probabilities.

    python -m resnext.predict ig_resnext101_32x8d.pth cat.jpg --arch ig_resnext101_32x8d
    python -m resnext.predict outputs/resnext29_16x64d_cifar10 plane.png --topk 3
    python -m resnext.predict outputs/mine photos/ 'more/*.jpg' --out predictions.csv   # or .json

A weights file (ours, torchvision's or timm's layout) is preprocessed as the model cards say:
bilinear resize of the shorter side to 256 (crop fraction 0.875), center crop 224, ImageNet
mean/std (CIFAR networks: 32x32, CIFAR statistics). A run directory uses its own evaluation
transform (its val_resize, val_crop and resize filter, bicubic in the paper recipes) and its final
model, checkpoints/last.pt (--checkpoint best: best.pt). 1000-class models print ImageNet class names
(the metadata torchvision ships; nothing is downloaded); others print the class index, and the class name when the run's data names it.
A folder stands for the images in it and below (.jpg, .jpeg, .png, sorted); a quoted glob for the files it
matches. Output: one line per image, then one line per class: probability, class index, name; --out also
writes them as CSV (image, rank, probability, class, name) or JSON (by the file's suffix).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms as T

from .data.imagenet_folder import IMAGE_EXTENSIONS
from .errors import OneLineParser, UserError, fail, printable
from .footprint import check_size
from .loading import CHECKPOINTS, Loaded, Preprocessing, class_names, load_model
from .outputs import check_file


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


OUT_FORMATS = (".csv", ".json")


def expand(items: list[str]) -> list[str]:
    """Image paths from the command line: a folder gives its images (recursively, sorted), a glob pattern
    (quoted, so the shell left it) the files it matches; UserError for a folder without images or a
    pattern matching nothing. A plain path is kept as given (read_image judges it); repeats are dropped."""
    out: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise UserError(f"{item}: a folder without images ({', '.join(IMAGE_EXTENSIONS)})")
            out += found
        elif not p.exists() and glob.has_magic(item):
            found = sorted(f for f in glob.glob(item, recursive=True) if Path(f).is_file())
            if not found:
                raise UserError(f"{item}: no file matches this pattern")
            out += found
        else:
            out.append(item)
    return list(dict.fromkeys(out))  # an image named twice (a folder and a glob) is predicted once


def write_predictions(out: Path, results, names: list[str] | None) -> None:
    """``results`` as CSV (one row per image and rank) or JSON (one object per image), by ``out``'s suffix."""
    rows = [{"image": path, "rank": r, "probability": p, "class": i, "name": names[i] if names else None}
            for path, top in results for r, (p, i) in enumerate(top, 1)]
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "w", newline="") as f:
        if out.suffix.lower() == ".json":
            per_image = [{"image": path, "top": [{k: v for k, v in row.items() if k != "image"}
                                                 for row in rows if row["image"] == path]} for path, _ in results]
            json.dump(per_image, f, indent=1)
        else:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["image"])
            writer.writeheader()
            writer.writerows(rows)
    tmp.replace(out)


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
    ap.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...), folders of them, or quoted globs")
    ap.add_argument("--arch", default=None, help="model name for a plain state dict (default resnext50_32x4d)")
    ap.add_argument("--checkpoint", choices=CHECKPOINTS, default="last",
                    help="a run directory's checkpoint: last (the final model, default) or best")
    ap.add_argument("--topk", type=int, default=5, help="classes to print per image (default 5)")
    ap.add_argument("--image-size", type=int, default=None,
                    help="center-crop side (default: the run's val_crop; 224, or 32 for CIFAR networks)")
    ap.add_argument("--out", type=Path, default=None, help="also write the predictions to this .csv or .json file")
    args = ap.parse_args(argv)
    if args.topk < 1:
        fail(f"--topk {args.topk}: must be at least 1")
    if args.image_size is not None and args.image_size < 1:
        fail(f"--image-size {args.image_size}: must be at least 1")
    try:
        if args.out is not None:  # before any work: a suffix we write, a path we can write
            if args.out.suffix.lower() not in OUT_FORMATS:
                raise UserError(f"--out {args.out}: give a file ending in {' or '.join(OUT_FORMATS)}")
            check_file(args.out, f"--out {args.out}")
        images = expand(args.images)
        loaded = load_model(args.weights, args.arch, args.checkpoint)
        if args.image_size is not None:  # a side the memory cannot hold: one line, not the kernel's kill
            check_size(loaded.model, args.image_size, 1, f"--image-size {args.image_size}")
        results = predict(loaded, images, args.topk, args.image_size)
        names = class_names(loaded)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            write_predictions(args.out, results, names)
    except UserError as e:
        fail(str(e))
    except OSError as e:
        fail(f"--out {args.out}: cannot write ({e.strerror})")
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
