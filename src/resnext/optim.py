"""The optimizer: SGD (momentum, Nesterov), AdamW or LAMB (resnext.lamb), with the weight-decay exemptions a recipe names
(optim.no_decay)."""

from __future__ import annotations

import torch
from torch import nn

from .lamb import Lamb

NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)

# optim.no_decay: which parameters get no weight decay.
#   none         every parameter is decayed (the paper; fb.resnet.torch's optim.sgd weightDecay)
#   bn_and_bias  normalization-layer parameters and every bias
#   bn           normalization-layer parameters only; biases (the fc's) are decayed
#   bn_named     parameters whose name holds "bn": NVIDIA DeepLearningExamples' rule, verbatim
#                (image_classification/optimizers.py, get_sgd_optimizer: `"bn" in n`). With
#                torchvision's names (ours and theirs) that is every block's bn1/bn2/bn3 and the stem's
#                bn1, but NOT a projection shortcut's BN (downsample.1), which their code decays.
NO_DECAY = ("none", "bn_and_bias", "bn", "bn_named")


def scaled_lr(lr: float, batch_size: int, ref_batch: int) -> float:
    """Linear scaling rule (Goyal et al.; docs/paper.md): lr for ``batch_size`` given lr quoted for ``ref_batch``."""
    return lr * batch_size / ref_batch


def exempt(rule: str, module: nn.Module, module_name: str, name: str) -> bool:
    """Whether parameter ``name`` of ``module`` (named ``module_name`` in the model) gets no weight decay."""
    if rule == "none":
        return False
    if rule == "bn_named":
        return "bn" in f"{module_name}.{name}"
    is_norm = isinstance(module, NORMS)
    return is_norm or (rule == "bn_and_bias" and name == "bias")


def param_groups(model: nn.Module, weight_decay: float, no_decay: str = "none") -> list[dict]:
    """One group (rule none), or two: parameters with decay, and those the rule exempts (decay 0)."""
    if no_decay not in NO_DECAY:
        raise ValueError(f"no_decay must be one of {', '.join(NO_DECAY)}, got {no_decay!r}")
    if no_decay == "none":
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decay, exempted = [], []
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if p.requires_grad:
                (exempted if exempt(no_decay, module, module_name, name) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": exempted, "weight_decay": 0.0}]


def use_fused(fused: bool | None, device: torch.device) -> bool:
    """optim.fused resolved for parameters on ``device``: null means on CUDA, where GradScaler hands the
    fused kernel its scale and overflow flag instead of reading them on the host every step."""
    return device.type == "cuda" if fused is None else bool(fused)


def build_optimizer(cfg, model: nn.Module, batch_size: int) -> torch.optim.Optimizer:
    """SGD (or AdamW, LAMB: optim.name) for the optim config subtree; its lr is the scaled base lr (the schedule
    multiplies it); weight decay per group as optim.no_decay says (AdamW's decoupled from the gradient)."""
    lr = scaled_lr(cfg.lr, batch_size, cfg.ref_batch)
    groups = param_groups(model, cfg.weight_decay, str(cfg.no_decay))
    device = next(model.parameters()).device
    fused = use_fused(cfg.get("fused"), device)
    name = str(cfg.get("name", "sgd"))
    if name == "lamb":
        opt = Lamb(groups, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps)
    elif name == "adamw":
        opt = torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                foreach=None if fused else cfg.foreach, fused=fused or None)
    else:
        opt = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                              foreach=None if fused else cfg.foreach, fused=fused or None)
    for g in opt.param_groups:
        g["base_lr"] = lr
    prime_momentum(opt)
    return opt


def prime_momentum(opt: torch.optim.Optimizer) -> None:
    """Give a fused SGD zero momentum buffers before its first step. PyTorch's fused SGD allocates them
    uninitialised (empty_like) on its first step and fills them in the kernel; when fp16 loss scaling skips
    that step (an overflow, usual at the initial scale) they stay garbage and the next step reads them as
    momentum (seen on CPU: weights of 1e17 after one skipped and one clean step). With zeros the first real
    step computes momentum * 0 + grad = grad exactly, as an unprimed first step does (dampening 0)."""
    if not opt.defaults.get("fused") or not isinstance(opt, torch.optim.SGD):
        return
    for g in opt.param_groups:
        if g["momentum"] == 0:
            continue
        if g["dampening"] != 0:
            raise ValueError("fused SGD with dampening cannot be primed exactly; set optim.fused=false")
        for p in g["params"]:
            state = opt.state[p]
            if state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
