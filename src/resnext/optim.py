"""The optimizer: SGD (momentum, Nesterov) with optional no-weight-decay for BN parameters and biases."""

from __future__ import annotations

import torch
from torch import nn


def scaled_lr(lr: float, batch_size: int, ref_batch: int) -> float:
    """Linear scaling rule (Goyal et al.; PAPER.md): lr for ``batch_size`` given lr quoted for ``ref_batch``."""
    return lr * batch_size / ref_batch


def param_groups(model: nn.Module, weight_decay: float, decay_bn_and_bias: bool) -> list[dict]:
    """One group, or two: weights of convs/linears with decay, BN parameters and biases without."""
    if decay_bn_and_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            is_norm = isinstance(module, nn.modules.batchnorm._NormBase | nn.GroupNorm | nn.LayerNorm)
            (no_decay if is_norm or name == "bias" else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(cfg, model: nn.Module, batch_size: int) -> torch.optim.SGD:
    """SGD for the optim config subtree; its lr is the scaled base lr (the schedule multiplies it)."""
    lr = scaled_lr(cfg.lr, batch_size, cfg.ref_batch)
    groups = param_groups(model, cfg.weight_decay, cfg.decay_bn_and_bias)
    opt = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                          foreach=cfg.foreach)
    for g in opt.param_groups:
        g["base_lr"] = lr
    return opt
