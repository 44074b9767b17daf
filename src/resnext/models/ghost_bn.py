"""Ghost batch norm: batch statistics over fixed groups of images, whatever the batch a process sees."""

from __future__ import annotations

import torch
from torch import nn


class GhostBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics come from consecutive groups of ``group`` images.

    The paper's 8 GPUs x 32 images compute BN over 32 images; a process holding 256 images at once
    reproduces that with ``group=32``. Evaluation, and batches of at most ``group`` images, are plain
    BN. The running statistics take one update per call with the mean of the groups' statistics
    (what k sequential batches would give to first order). Parameter and buffer names are BatchNorm2d's,
    so state dicts are interchangeable.
    """

    def __init__(self, num_features: int, group: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[0], x.shape[1]
        if not self.training or n <= self.group:
            return super().forward(x)
        if n % self.group:
            raise ValueError(f"a batch of {n} images does not split into BN groups of {self.group}")
        k = n // self.group
        xs = x.view(k, self.group, *x.shape[1:])  # a view: keeps channels_last strides
        stats_in = xs.float() if xs.dtype in (torch.float16, torch.bfloat16) else xs  # statistics in >= fp32
        var, mean = torch.var_mean(stats_in, dim=(1, 3, 4), correction=0, keepdim=True)  # (k, 1, C, 1, 1)
        scale = torch.rsqrt(var + self.eps) * self.weight.view(1, 1, c, 1, 1)
        y = (xs - mean) * scale + self.bias.view(1, 1, c, 1, 1)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                count = self.group * x.shape[2] * x.shape[3]
                unbiased = var.view(k, c) * (count / max(count - 1, 1))
                self.running_mean.lerp_(mean.view(k, c).mean(0).to(self.running_mean.dtype), m)
                self.running_var.lerp_(unbiased.mean(0).to(self.running_var.dtype), m)
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        return y.reshape(x.shape).to(x.dtype).contiguous(memory_format=fmt)


def convert_ghost_bn(module: nn.Module, group: int) -> nn.Module:
    """Replace every BatchNorm2d in ``module`` by a GhostBatchNorm2d over ``group`` images, keeping its
    parameters, buffers, device and dtype; returns the module (changed in place below the top)."""
    if type(module) is nn.BatchNorm2d and module.affine:
        ghost = GhostBatchNorm2d(module.num_features, group, eps=module.eps, momentum=module.momentum,
                                 affine=module.affine, track_running_stats=module.track_running_stats,
                                 device=module.weight.device, dtype=module.weight.dtype)
        ghost.load_state_dict(module.state_dict())
        ghost.train(module.training)
        return ghost
    for name, child in module.named_children():
        setattr(module, name, convert_ghost_bn(child, group))
    return module
