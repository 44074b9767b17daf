"""Shared benchmark plumbing: timing with warm-up and medians, environment record, table and JSON output."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

# Dense peak tensor throughput (FLOP/s) per device name fragment, for model-FLOP utilisation.
PEAK_FLOPS = {
    ("H100", "bf16"): 989e12, ("H100", "fp16"): 989e12, ("H100", "fp32"): 67e12,
    ("H200", "bf16"): 989e12, ("H200", "fp16"): 989e12, ("H200", "fp32"): 67e12,
    ("A100", "bf16"): 312e12, ("A100", "fp16"): 312e12, ("A100", "fp32"): 19.5e12,
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], int], device: torch.device) -> tuple[float, int]:
    """Seconds taken by ``fn`` (which returns the number of images it processed), device-synced."""
    sync(device)
    t0 = time.perf_counter()
    n = fn()
    sync(device)
    return time.perf_counter() - t0, n


def interleaved(runs: dict[str, Callable[[], int]], device: torch.device, repeats: int,
                warmup: int = 1) -> dict[str, dict]:
    """Run each candidate ``warmup`` times, then ``repeats`` rounds alternating between them (so drift
    of the machine hits all alike); report median images/s and step time."""
    for fn in runs.values():
        for _ in range(warmup):
            timed(fn, device)
    samples: dict[str, list[tuple[float, int]]] = {k: [] for k in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            samples[name].append(timed(fn, device))
    out = {}
    for name, s in samples.items():
        rates = [n / t for t, n in s]
        out[name] = {"images_per_s": statistics.median(rates), "all_images_per_s": rates,
                     "seconds": statistics.median(t for t, _ in s), "images": [n for _, n in s]}
    return out


def paired_ratio(res: dict[str, dict], name: str, base: str) -> float:
    """Median over the interleaved rounds of name's rate / base's rate in the same round: drift of a shared
    machine between rounds cancels out, which a ratio of the two medians does not."""
    return statistics.median(a / b for a, b in zip(res[name]["all_images_per_s"], res[base]["all_images_per_s"],
                                                   strict=True))


def environment(device: torch.device) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
           "processor": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "device": str(device), "date": time.strftime("%Y-%m-%d")}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    try:
        import nvidia.dali as dali

        env["dali"] = dali.__version__
    except ImportError:
        pass
    return env


def peak_flops(device: torch.device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for (frag, p), v in PEAK_FLOPS.items() if frag in name and p == precision), None)


def write(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Markdown table; columns are (key, header, format)."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = []
    for r in rows:
        cells = []
        for key, _, fmt in columns:
            v = r.get(key)
            cells.append("-" if v is None else format(v, fmt) if fmt else str(v))
        body.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *body])
