"""Ghost batch norm: batch statistics over fixed groups of images, whatever the batch a process sees."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def to_groups(x: torch.Tensor, k: int) -> torch.Tensor:
    """(k*g, C, H, W) -> (g, k*C, H, W): the k groups of g consecutive images side by side as channels, so
    that one native batch_norm call computes every group's statistics. One copy; channels_last input gives
    channels_last output (memory (g, H, W, k, C): runs of C values), else contiguous (g, k, C, H, W)."""
    n, c, h, w = x.shape
    g = n // k
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        nhwc = x.permute(0, 2, 3, 1).view(k, g, h, w, c).permute(1, 2, 3, 0, 4)
        return nhwc.reshape(g, h, w, k * c).permute(0, 3, 1, 2)
    return x.reshape(k, g, c, h, w).transpose(0, 1).reshape(g, k * c, h, w)


def from_groups(y: torch.Tensor, k: int, channels_last: bool) -> torch.Tensor:
    """The inverse of to_groups: (g, k*C, H, W) -> (k*g, C, H, W) in the input's memory format (one copy)."""
    g, kc, h, w = y.shape
    c = kc // k
    if channels_last:
        nhwc = y.permute(0, 2, 3, 1).reshape(g, h, w, k, c).permute(3, 0, 1, 2, 4)
        return nhwc.reshape(k * g, h, w, c).permute(0, 3, 1, 2)
    return y.reshape(g, k, c, h, w).transpose(0, 1).reshape(k * g, c, h, w)


class GhostBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics come from consecutive groups of ``group`` images.

    The paper's 8 GPUs x 32 images compute BN over 32 images; a process holding 256 images at once
    reproduces that with ``group=32``. Evaluation, and batches of at most ``group`` images, are plain
    BN. The running statistics take one update per call with the mean of the groups' statistics
    (what k sequential batches would give to first order). Parameter and buffer names are BatchNorm2d's,
    so state dicts are interchangeable.

    Cost: the groups are laid side by side as channels (one copy in, one out) and normalised by one call
    of the native batch-norm kernel, which saves only its input for backward: the activation memory and
    kernel count of plain BN plus two copies, not the ~4x memory of composing the statistics from
    elementwise operations.
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
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        track = self.track_running_stats
        # the kernel's running-statistics update with momentum 1 hands back each group's batch mean and
        # unbiased variance; ours then takes their mean with this layer's momentum
        mean = self.running_mean.new_zeros(k * c) if track else None
        var = self.running_var.new_ones(k * c) if track else None
        weight = self.weight.repeat(k) if self.weight is not None else None
        bias = self.bias.repeat(k) if self.bias is not None else None
        y = F.batch_norm(to_groups(x, k), mean, var, weight, bias, True, 1.0, self.eps)
        if track:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.view(k, c).mean(0), m)
                self.running_var.lerp_(var.view(k, c).mean(0), m)
        return from_groups(y, k, channels_last)


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
