"""`python -m resnext.data {make-fake,verify,prepare-val}`: tools for ImageNet-layout folders."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .base import DataError
from .tools import make_fake, prepare_val, verify


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
        return w, h
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} must be WIDTHxHEIGHT, e.g. 500x375") from None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m resnext.data", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("make-fake", help="write a small ImageNet-layout JPEG folder")
    f.add_argument("root", type=Path)
    f.add_argument("--classes", type=int, default=10, help="number of classes")
    f.add_argument("--per-class", type=int, default=20, help="training images per class")
    f.add_argument("--val-per-class", type=int, default=5, help="validation images per class")
    f.add_argument("--size", type=_size, default=(160, 120), help="WIDTHxHEIGHT of every image")
    v = sub.add_parser("verify", help="count images, find undecodable/PNG/CMYK files, empty or mismatched classes")
    v.add_argument("root", type=Path)
    pv = sub.add_parser("prepare-val", help="move the flat official val folder into val/<class>/ folders")
    pv.add_argument("val_dir", type=Path, help="the folder of ILSVRC2012_val_*.JPEG files")
    pv.add_argument("labels", type=Path, help="'FILE SYNSET' lines, or one label per line (synset or class index)")
    pv.add_argument("--classes-from", type=Path, default=None, help="train/ folder naming numeric labels (sorted)")
    args = p.parse_args(argv)
    try:
        if args.cmd == "make-fake":
            if args.classes < 1 or args.per_class < 1 or args.val_per_class < 1:
                raise DataError("--classes, --per-class and --val-per-class must be >= 1")
            n = make_fake(args.root, args.classes, args.per_class, args.val_per_class, args.size)
            print(f"wrote {n} JPEG files under {args.root}")
        elif args.cmd == "verify":
            if not args.root.is_dir():
                raise DataError(f"{args.root}: not a folder; expected an ImageNet root holding train/ and val/")
            report, problems = verify(args.root)
            print("\n".join(report))
            for line in problems:
                print(f"problem: {line}")
            print(f"{len(problems)} problem(s)")
            sys.exit(1 if problems else 0)
        else:
            n = prepare_val(args.val_dir, args.labels, args.classes_from)
            print(f"moved {n} images into class folders under {args.val_dir}" if n else
                  f"nothing to move: {args.val_dir} has no flat images left")
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
