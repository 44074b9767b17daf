"""LAMB (You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes", 2019,
Algorithm 2): Adam's bias-corrected moments, the weight decay added to the update, and each tensor's update
rescaled by its trust ratio ||w|| / ||update|| (1 where either norm is 0).

As timm's ``Lamb`` (the oracle of the tests), tensors without weight decay (optim.no_decay's exemptions) take
the plain Adam update, unscaled, and gradients are used as they come: a clip of their global norm is
optim.clip_grad_norm's job (timm's ``max_grad_norm=1.0`` default is ``optim.clip_grad_norm=1.0`` here).
"""

from __future__ import annotations

import torch


class Lamb(torch.optim.Optimizer):
    """LAMB over param groups with ``lr``, ``betas``, ``eps`` and ``weight_decay``; multi-tensor updates."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"no LAMB with lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if not self.state[p]:
                    self.state[p] = {"step": torch.zeros((), dtype=torch.float32),
                                     "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                     "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
            states = [self.state[p] for p in params]
            grads = [p.grad for p in params]
            m, v = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
            beta1, beta2 = group["betas"]
            for s in states:
                s["step"] += 1
            t = float(states[0]["step"])  # a group's tensors step together
            torch._foreach_lerp_(m, grads, 1 - beta1)  # m = beta1 m + (1 - beta1) g
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)  # v = beta2 v + (1 - beta2) g^2
            denom = torch._foreach_sqrt(v)
            torch._foreach_div_(denom, (1 - beta2**t) ** 0.5)
            torch._foreach_add_(denom, group["eps"])
            update = torch._foreach_div(m, 1 - beta1**t)
            torch._foreach_div_(update, denom)  # Adam's step direction, bias-corrected
            wd, lr = group["weight_decay"], group["lr"]
            if wd == 0:
                torch._foreach_add_(params, update, alpha=-lr)
                continue
            torch._foreach_add_(update, params, alpha=wd)
            w_norm, u_norm = torch._foreach_norm(params), torch._foreach_norm(update)
            ratio = [torch.where((w > 0) & (u > 0), w / u, torch.ones_like(w)) for w, u in zip(w_norm, u_norm, strict=True)]
            torch._foreach_mul_(update, ratio)  # the layer-wise trust ratio
            torch._foreach_add_(params, update, alpha=-lr)
        return loss
