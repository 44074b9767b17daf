"""`python -m resnext.bench {train,data,cifar,e2e} ...`: throughput side by side with a reference."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from ..errors import EXIT_USER_ERROR, UserError, printable
from .common import write

SUBCOMMANDS = {
    "train": "our engine's step vs a hand-written loop over the torchvision model (synthetic data)",
    "data": "each ImageNet backend vs torchvision ImageFolder + DataLoader on a JPEG folder",
    "cifar": "the on-device CIFAR loader vs torchvision CIFAR10 + DataLoader",
    "e2e": "end-to-end training (data + step) vs synthetic data, same model",
}


COMMON = ("--out", "--dry-run")  # the tool's own options: taken from anywhere on the line


def common_first(argv: list[str]) -> list[str]:
    """``argv`` with the tool's own options (--out X, --out=X, --dry-run) moved before the subcommand, so
    they may be given anywhere (``bench train --batch 64 --out r.json`` as well as before ``train``)."""
    common, rest, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--out" and i + 1 < len(argv):
            common += argv[i:i + 2]
            i += 1
        elif a == "--dry-run" or a.startswith("--out="):
            common.append(a)
        else:
            rest.append(a)
        i += 1
    return common + rest


def main(argv: list[str] | None = None) -> None:
    argv = common_first(sys.argv[1:] if argv is None else argv)
    epilog = "subcommands:\n" + "\n".join(f"  {k:<6} {v}" for k, v in SUBCOMMANDS.items())
    parser = argparse.ArgumentParser(prog="python -m resnext.bench", description=__doc__, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="JSON result file (default bench-results/<cmd>.json)")
    parser.add_argument("--dry-run", action="store_true",
                        help="parse the subcommand's options, print them and exit (measures nothing)")
    parser.add_argument("cmd", choices=sorted(SUBCOMMANDS), help="what to measure")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="the subcommand's options (see CMD --help)")
    top = parser.parse_args(argv)
    module = importlib.import_module(f".{top.cmd}", __package__)  # only the chosen one is imported
    sub = argparse.ArgumentParser(prog=f"python -m resnext.bench {top.cmd}", description=SUBCOMMANDS[top.cmd])
    module.add_args(sub)
    args = sub.parse_args(top.rest)
    args.out, args.cmd = top.out, top.cmd
    if top.dry_run:
        print(f"bench {top.cmd}: " + " ".join(f"{k}={v}" for k, v in sorted(vars(args).items())))
        return
    try:
        result = module.run(args)
    except UserError as e:  # anything else is a bug and keeps its traceback
        print(f"error: {printable(str(e))}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    out = Path(args.out or f"bench-results/{args.cmd}.json")
    result.setdefault("settings", {})["command"] = "python -m resnext.bench " + " ".join(argv)
    write(result, out)
    print(result.get("table") or json.dumps(result["rows"], indent=2))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
