"""An exponential moving average of the weights (and BN buffers), beside the model: evaluated, saved, resumed.

After every ``every``-th optimizer step, each floating tensor of the average moves towards the model's:
avg = decay x avg + (1 - decay) x current (integer buffers, such as BN's batch counter, keep the value the
last copy gave them); the first update copies. Up to ``warmup_steps`` every update copies (torchvision's reference restarts its EMA
during the lr warmup). This is what torch.optim.swa_utils.AveragedModel with get_ema_multi_avg_fn and
use_buffers=True computes (the oracle of its test).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightEMA:
    """The average of ``model``'s parameters and buffers; ``module`` is a copy of the model holding it."""

    def __init__(self, model: nn.Module, decay: float, every: int = 1, warmup_steps: int = 0) -> None:
        if not 0 < decay < 1 or every < 1:
            raise ValueError(f"decay must be in (0, 1) and every >= 1, got {decay}, {every}")
        self.decay, self.every, self.warmup_steps = decay, every, warmup_steps
        self.updates = 0  # averaging updates done (0: the next one copies)
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def _pairs(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        mine = list(self.module.parameters()) + list(self.module.buffers())
        theirs = list(model.parameters()) + list(model.buffers())
        return mine, theirs

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """After optimizer step ``step`` (the count of steps done): nothing unless ``every`` divides it; a copy
        of the model for the first update and during warmup; else one averaging step."""
        if step % self.every:
            return
        mine, theirs = self._pairs(model)
        if self.updates == 0 or step <= self.warmup_steps:
            for a, b in zip(mine, theirs, strict=True):
                a.copy_(b)
        else:
            floats = [(a, b) for a, b in zip(mine, theirs, strict=True) if a.is_floating_point()]
            torch._foreach_lerp_([a for a, _ in floats], [b.detach() for _, b in floats], 1.0 - self.decay)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
