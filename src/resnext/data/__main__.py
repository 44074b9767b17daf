"""`python -m resnext.data {make-fake,verify,prepare-val}`: tools for ImageNet-layout folders."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import EXIT_CHECK_FAILED, DataError, UserError, fail, printable, reports_user_errors
from .tools import make_fake, prepare_val, verify


class _Parser(argparse.ArgumentParser):
    """Usage mistakes end in one line on stderr and exit code 2 (argparse would print the usage too)."""

    def error(self, message: str) -> None:
        fail(f"{self.prog}: {message} (see --help)")


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} must be WIDTHxHEIGHT, e.g. 500x375") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"size {text!r} must be positive, e.g. 500x375")
    return w, h


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m resnext.data", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    f = sub.add_parser("make-fake", help="write a small ImageNet-layout JPEG folder")
    f.add_argument("root", type=Path)
    f.add_argument("--classes", type=int, default=10, help="number of classes")
    f.add_argument("--per-class", type=int, default=20, help="training images per class")
    f.add_argument("--val-per-class", type=int, default=5, help="validation images per class")
    f.add_argument("--size", type=_size, default=(160, 120), help="WIDTHxHEIGHT of every image")
    v = sub.add_parser("verify", help="count images per class, find undecodable/PNG/CMYK files, empty or "
                                      "mismatched classes; exit 1 on problems")
    v.add_argument("root", type=Path)
    v.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes decoding files")
    pv = sub.add_parser("prepare-val", help="move the flat official val folder into val/<class>/ folders",
                        description="Labels file forms: 'FILE SYNSET' lines (e.g. 'ILSVRC2012_val_00000001.JPEG "
                                    "n01751748'), LOC_val_solution.csv, valprep.sh's 'mv FILE SYNSET/' lines, or one "
                                    "label per line for ILSVRC2012_val_00000001.JPEG onwards: a synset, or a 0-based "
                                    "index into the sorted folders of --classes-from.")
    pv.add_argument("val_dir", type=Path, help="the folder of ILSVRC2012_val_*.JPEG files")
    pv.add_argument("labels", type=Path, help="ground-truth file (forms above)")
    pv.add_argument("--classes-from", type=Path, default=None,
                    help="train/ folder: names numeric labels (sorted order) and checks every synset exists")
    return p


@reports_user_errors
def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "make-fake":
            if args.classes < 1 or args.per_class < 1 or args.val_per_class < 1:
                raise DataError("--classes, --per-class and --val-per-class must be >= 1")
            try:
                n = make_fake(args.root, args.classes, args.per_class, args.val_per_class, args.size)
            except OSError as e:
                raise DataError(f"{args.root}: cannot write the data set there ({e.strerror or e})") from None
            print(f"wrote {n} JPEG files under {args.root}")
        elif args.cmd == "verify":
            if not args.root.is_dir():
                raise DataError(f"{args.root}: not a folder; expected an ImageNet root holding train/ and val/")
            report, problems = verify(args.root, args.workers)
            print("\n".join(printable(line) for line in report))
            for line in problems:
                print(f"problem: {printable(line)}")
            print(f"{len(problems)} problem(s)")
            sys.exit(EXIT_CHECK_FAILED if problems else 0)
        else:
            if args.classes_from is not None and not args.classes_from.is_dir():
                raise DataError(f"{args.classes_from}: not a folder; --classes-from needs the train/ folder")
            n = prepare_val(args.val_dir, args.labels, args.classes_from)
            print(f"moved {n} images into class folders under {args.val_dir}" if n else
                  f"nothing to move: {args.val_dir} has no flat images left")
    except UserError as e:
        fail(str(e))
    except BrokenPipeError:  # stdout's reader went away: reports_user_errors ends quietly
        raise
    except OSError as e:  # e.g. a read-only or vanished folder: name it
        fail(f"{e.filename or ''}: {e.strerror or e}")


if __name__ == "__main__":
    main()
