"""What an input size costs in memory, checked against what the machine has before the work starts.

An image side of 100,000 pixels is a valid integer, and a forward pass at that size asks the kernel for
terabytes: the process is killed (exit 137) with no word. The estimate here is an inference forward's
largest activation measured at a small size and scaled by the area, times the few tensors alive at once;
it is refused only where it exceeds the memory available, so it never refuses a size that fits.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from .errors import UserError

PROBE = 64  # side of the probe forward (every family takes it: CIFAR networks pool adaptively)
ALIVE = 4  # tensors of the largest size alive at once in a forward (a block's input, output, branch, shortcut)


def available_bytes(device: torch.device | None = None) -> int:
    """Memory this process may still take: MemAvailable on the CPU (Linux), free memory on a CUDA device."""
    if device is not None and device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


@torch.no_grad()
def forward_bytes(model: nn.Module, size: int, batch: int = 1, dtype: torch.dtype = torch.float32) -> float:
    """Estimated peak bytes of an inference forward of ``batch`` images of ``size`` x ``size``."""
    largest = 0

    def hook(_module, _inputs, out):
        nonlocal largest
        if isinstance(out, torch.Tensor):
            largest = max(largest, out.numel())

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    was_training = model.training
    try:
        model.eval()
        p = next(model.parameters())
        model(torch.zeros(1, 3, PROBE, PROBE, device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    per_element = torch.finfo(dtype).bits // 8
    return (ALIVE * largest / (PROBE * PROBE) + 3) * per_element * batch * size * size


def check_size(model: nn.Module, size: int, batch: int, name: str, dtype: torch.dtype = torch.float32,
               device: torch.device | None = None) -> None:
    """check_sizes for one size (``name`` says which)."""
    check_sizes(model, {name: size}, batch, dtype, device)


def check_sizes(model: nn.Module, sizes: dict[str, int], batch: int, dtype: torch.dtype = torch.float32,
                device: torch.device | None = None) -> None:
    """UserError (one line starting with ``name``, "--image-size 512" or "data.image_size=512") where a
    forward of ``batch`` images of ``size`` would not fit in memory (training needs more: this bound only
    refuses what cannot work at all)."""
    per_pixel = forward_bytes(model, 1, batch, dtype)  # one probe forward, scaled by each size's area
    have = available_bytes(device)
    for name, size in sizes.items():
        need = per_pixel * size * size
        if need > have:
            raise UserError(f"{name}: a forward of {batch} image(s) at {size}x{size} needs about "
                            f"{need / 2**30:.1f} GiB, more than the {have / 2**30:.1f} GiB available; give a "
                            "smaller size")
