"""`python -m resnext.bench {train,data,cifar,e2e} ...`: throughput side by side with a reference."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from .common import write

SUBCOMMANDS = {
    "train": "our engine's step vs a hand-written loop over the torchvision model (synthetic data)",
    "data": "each ImageNet backend vs torchvision ImageFolder + DataLoader on a JPEG folder",
    "cifar": "the on-device CIFAR loader vs torchvision CIFAR10 + DataLoader",
    "e2e": "end-to-end training (data + step) vs synthetic data, same model",
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m resnext.bench", description=__doc__)
    parser.add_argument("--out", default=None, help="JSON result file (default bench-results/<cmd>.json)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, help_text in SUBCOMMANDS.items():
        module = importlib.import_module(f".{name}", __package__)
        module.add_args(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    module = importlib.import_module(f".{args.cmd}", __package__)
    try:
        result = module.run(args)
    except ValueError as e:  # ConfigError, DataError: a user mistake
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    out = Path(args.out or f"bench-results/{args.cmd}.json")
    result.setdefault("settings", {})["command"] = "python -m resnext.bench " + " ".join(sys.argv[1:] if argv is None else argv)
    write(result, out)
    print(result.get("table") or json.dumps(result["rows"], indent=2))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
