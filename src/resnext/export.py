"""`python -m resnext.export WEIGHTS_OR_RUN_DIR --format torchscript|onnx`: a deployable model, checked.

The exported model is run on random input next to the PyTorch model and the largest difference is
printed (ONNX: with onnxruntime when installed, `pip install -e '.[onnx]'`; otherwise the check is
reported as skipped). --fp16 exports half-precision weights (for GPUs); --channels-last NHWC weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .compose import fail
from .engine.checkpoint import CheckpointError
from .loading import load_model

FORMATS = ("torchscript", "onnx")


def export_torchscript(model: torch.nn.Module, x: torch.Tensor, out: Path) -> torch.nn.Module:
    traced = torch.jit.trace(model, x)
    traced.save(str(out))
    return torch.jit.load(str(out))


def export_onnx(model: torch.nn.Module, x: torch.Tensor, out: Path) -> None:
    from torch.export import Dim

    torch.onnx.export(model, (x,), str(out), dynamo=True, input_names=["images"], output_names=["logits"],
                      dynamic_shapes=({0: Dim("batch")},), verbose=False)


def onnx_outputs(out: Path, x: torch.Tensor) -> torch.Tensor | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": x.numpy()})[0])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m resnext.export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", help="run directory, or a weights file (ours, torchvision's or timm's layout)")
    ap.add_argument("--format", required=True, help="torchscript or onnx")
    ap.add_argument("--arch", default=None, help="model name for a plain state dict (default resnext50_32x4d)")
    ap.add_argument("--out", type=Path, default=None, help="output file (default: beside the weights)")
    ap.add_argument("--image-size", type=int, default=224, help="input side of the example input")
    ap.add_argument("--fp16", action="store_true", help="half-precision weights and inputs (TorchScript on CUDA)")
    ap.add_argument("--channels-last", action="store_true", help="NHWC weights and example input")
    args = ap.parse_args(argv)
    if args.format not in FORMATS:
        fail(f"--format {args.format!r} is not supported; choose one of {', '.join(FORMATS)}")
    try:
        model, what = load_model(args.weights, args.arch)
    except CheckpointError as e:
        fail(str(e))
    src = Path(args.weights)
    out = args.out or (src if src.is_dir() else src.parent) / f"{src.stem if src.is_file() else 'model'}." + (
        "ts" if args.format == "torchscript" else "onnx")
    device = torch.device("cuda" if args.fp16 and torch.cuda.is_available() else "cpu")
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    dtype = torch.float16 if args.fp16 else torch.float32
    if args.fp16 and args.format == "onnx":
        fail("--fp16 applies to TorchScript exports; export ONNX in fp32 and let the runtime convert it")
    model = model.to(device, dtype=dtype, memory_format=fmt)
    x = torch.randn(2, 3, args.image_size, args.image_size, device=device, dtype=dtype).to(memory_format=fmt)
    with torch.no_grad():
        ref = model(x).float().cpu()
        if args.format == "torchscript":
            got = export_torchscript(model, x, out)(x).float().cpu()
        else:
            export_onnx(model, x, out)
            got = onnx_outputs(out, x.cpu())
    print(f"exported {what} -> {out} ({args.format}{', fp16' if args.fp16 else ''}"
          f"{', channels_last' if args.channels_last else ''})")
    if got is None:
        print("check skipped: onnxruntime is not installed (pip install -e '.[onnx]')")
    else:
        diff = (got - ref).abs().max().item()
        print(f"max abs difference vs PyTorch on random input: {diff:.3g}")
        tol = 1e-2 if args.fp16 else 1e-4
        if diff > tol:
            print(f"error: exported model differs from PyTorch by {diff:.3g} (> {tol})", file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
