"""`python -m resnext.export WEIGHTS_OR_RUN_DIR --format torchscript|onnx`: a deployable model, checked.

    python -m resnext.export resnext50.pth --format onnx --arch resnext50_32x4d --out resnext50.onnx
    python -m resnext.export outputs/resnext29_16x64d_cifar10 --format torchscript --channels-last

The exported model takes any batch size. It is run on a random batch of another size than the one
it was exported with, next to the PyTorch model, and the largest absolute difference is printed; a
difference beyond the tolerance (1e-4 fp32, 1e-2 fp16, relative to the logits' scale) exits with 1.
ONNX needs `pip install -e '.[onnx]'`; without onnxruntime the numerical check is reported as skipped.
--fp16 exports half-precision weights and inputs (on the GPU when there is one); --channels-last
traces with NHWC weights and inputs. Default output: beside the weights file, or inside the run dir.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from .errors import EXIT_CHECK_FAILED, OneLineParser, UserError, fail
from .footprint import check_size
from .loading import CHECKPOINTS, description, load_model
from .outputs import check_file

FORMATS = {"torchscript": ".ts", "onnx": ".onnx"}  # format -> file suffix
EXPORT_BATCH, CHECK_BATCH = 2, 3  # exported with one batch size, checked with another
ONNX_INLINE_LIMIT = 1 << 30  # weights above this many bytes go to an external .data file


def default_out(source: Path, fmt: str, fp16: bool) -> Path:
    """RUN_DIR/model[.fp16].EXT for a run directory, FILE_STEM[.fp16].EXT beside a weights file."""
    stem = "model" if source.is_dir() else source.stem
    folder = source if source.is_dir() else source.parent
    return folder / f"{stem}{'.fp16' if fp16 else ''}{FORMATS[fmt]}"


#: The metadata key (ONNX metadata_props) / extra file (TorchScript) holding the model's description: its
#: evaluation transform, class names and source, as JSON (resnext.loading.description).
METADATA = "resnext.json"


def export_torchscript(model: nn.Module, example: torch.Tensor, out: Path, meta: dict) -> nn.Module:
    """Trace, save with ``meta`` as the extra file METADATA, and load back what was saved (the check runs the
    file, not the in-memory trace)."""
    with warnings.catch_warnings():  # torch.jit announces its deprecation on every call
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model, example)
        traced.save(str(out), _extra_files={METADATA: json.dumps(meta)})
        return torch.jit.load(str(out), map_location=example.device)


def export_onnx(model: nn.Module, example: torch.Tensor, out: Path, meta: dict) -> list[Path]:
    """torch.onnx.export (dynamo) with a dynamic batch dimension; input "images", output "logits".

    Weights go inside the .onnx file unless they pass ONNX's 2 GB protobuf limit (the larger IG
    models), then into OUT.data beside it. Returns the files written.
    """
    import onnx
    from torch.export import Dim

    nbytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    external = nbytes > ONNX_INLINE_LIMIT
    (out.parent / f"{out.name}.data").unlink(missing_ok=True)  # a stale one from an earlier export
    chatter = io.StringIO()  # the exporter narrates each step on stdout; keep ours readable
    with contextlib.redirect_stdout(chatter):
        torch.onnx.export(model, (example,), str(out), dynamo=True, input_names=["images"],
                          output_names=["logits"], dynamic_shapes=({0: Dim("batch")},),
                          external_data=external, verbose=False)
    proto = onnx.load(str(out), load_external_data=False)  # external tensors stay where they were written
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA, json.dumps(meta)
    onnx.save(proto, str(out))
    onnx.checker.check_model(str(out))
    return [out, *([out.parent / f"{out.name}.data"] if external else [])]


def onnx_outputs(out: Path, x: torch.Tensor) -> torch.Tensor | None:
    """Logits from onnxruntime on the CPU, or None when onnxruntime is not installed."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": x.cpu().contiguous().numpy()})[0])


def max_difference(got: torch.Tensor, ref: torch.Tensor) -> float:
    if got.shape != ref.shape:
        raise RuntimeError(f"exported model gives shape {tuple(got.shape)}, PyTorch {tuple(ref.shape)}")
    return (got.float().cpu() - ref.float().cpu()).abs().max().item()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = OneLineParser(prog="python -m resnext.export", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", help="run directory, or a weights file (ours, torchvision's or timm's layout)")
    ap.add_argument("--format", required=True, help=f"{' or '.join(FORMATS)}")
    ap.add_argument("--arch", default=None, help="model name for a plain state dict (default resnext50_32x4d)")
    ap.add_argument("--checkpoint", choices=CHECKPOINTS, default="last",
                    help="a run directory's checkpoint: last (the final model, default) or best")
    ap.add_argument("--out", type=Path, default=None, help="output file (default: beside the weights)")
    ap.add_argument("--image-size", type=int, default=None,
                    help="side of the example input (default: the run's val_crop; 224, or 32 for CIFAR networks)")
    ap.add_argument("--fp16", action="store_true", help="half-precision weights and inputs")
    ap.add_argument("--channels-last", action="store_true", help="NHWC weights and example input")
    args = ap.parse_args(argv)
    if args.format not in FORMATS:
        fail(f"--format {args.format!r} is not supported; choose one of {', '.join(FORMATS)}")
    if args.image_size is not None and args.image_size < 1:
        fail(f"--image-size {args.image_size}: must be at least 1")
    if args.format == "onnx":
        lacking = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
        if lacking:
            fail(f"--format onnx needs {' and '.join(lacking)}: pip install -e '.[onnx]'")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = args.out or default_out(Path(args.weights), args.format, args.fp16)
    try:
        if out.is_dir():
            raise UserError(f"--out {out} is a directory; give a file path such as "
                            f"{out / ('model' + FORMATS[args.format])}")
        check_file(out, f"--out {out}")  # before any work: a folder that cannot be written, /proc, a link
        loaded = load_model(args.weights, args.arch, args.checkpoint)
        if args.image_size is not None:  # traced and checked at that size: one line where memory cannot hold it
            check_size(loaded.model, args.image_size, EXPORT_BATCH + CHECK_BATCH, f"--image-size {args.image_size}")
        out.parent.mkdir(parents=True, exist_ok=True)
    except UserError as e:
        fail(str(e))
    except OSError as e:
        fail(f"--out {out}: cannot create its folder ({e.strerror})")

    device = torch.device("cuda" if args.fp16 and torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if args.fp16 else torch.float32
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = loaded.model.to(device, dtype=dtype, memory_format=fmt)
    size = loaded.preprocessing(args.image_size).crop
    gen = torch.Generator().manual_seed(0)
    example, x = (torch.randn(n, 3, size, size, generator=gen).to(device, dtype).to(memory_format=fmt)
                  for n in (EXPORT_BATCH, CHECK_BATCH))
    with torch.no_grad():
        ref = model(x)
        try:
            meta = description(loaded, args.image_size)
            if args.format == "torchscript":
                got, written = export_torchscript(model, example, out, meta)(x), [out]
            else:
                written = export_onnx(model, example, out, meta)
                got = onnx_outputs(out, x)
        except OSError as e:
            fail(f"--out {out}: cannot write ({e.strerror or type(e).__name__})")

    flags = "".join([", fp16" if args.fp16 else "", ", channels_last" if args.channels_last else ""])
    print(f"exported {loaded.what} -> {' + '.join(map(str, written))} "
          f"({args.format}{flags}, input N x 3 x {size} x {size})")
    if got is None:
        print("check skipped: onnxruntime is not installed (pip install -e '.[onnx]')")
        return
    diff = max_difference(got, ref)
    tol = (1e-2 if args.fp16 else 1e-4) * max(1.0, ref.float().abs().max().item())
    print(f"max abs difference vs PyTorch on random input (batch {CHECK_BATCH}): {diff:.3g} (tolerance {tol:.3g})")
    if not diff <= tol:
        print(f"error: the exported model differs from PyTorch by {diff:.3g} (> {tol:.3g})", file=sys.stderr)
        sys.exit(EXIT_CHECK_FAILED)


if __name__ == "__main__":
    main()
