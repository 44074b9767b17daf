"""Learning-rate schedule as a pure function of the optimizer step: linear warmup, then step or cosine."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    name: str  # "step" or "cosine"
    steps_per_epoch: int  # optimizer steps in one epoch
    epochs: int  # length of the run
    warmup_epochs: float = 0.0  # linear warmup length
    warmup_start: float = 0.0  # factor at step 0 of the warmup
    milestones: tuple[int, ...] = ()  # step schedule: epochs where the factor is multiplied by gamma
    gamma: float = 0.1  # step schedule: factor per milestone
    final_lr: float = 0.0  # cosine: factor at the end of the run
    granularity: str = "step"  # "step": the factor moves every step | "epoch": once per epoch

    @classmethod
    def from_config(cls, cfg, steps_per_epoch: int, epochs: int) -> Schedule:
        return cls(cfg.name, steps_per_epoch, epochs, cfg.warmup_epochs, cfg.warmup_start,
                   tuple(cfg.milestones), cfg.gamma, cfg.final_lr, str(getattr(cfg, "granularity", "step")))

    def factor(self, step: int) -> float:
        """lr multiplier at optimizer step ``step`` (0-based), applied before that step's update.

        With granularity "epoch" the factor is constant over an epoch, as NVIDIA DeepLearningExamples'
        lr policies (image_classification/optimizers.py) compute it from the epoch index e: warmup
        (e + 1) / warmup_epochs (from warmup_start), then the step or cosine value at the epoch's first step.
        """
        if self.granularity == "epoch":
            epoch = step // self.steps_per_epoch
            if epoch < self.warmup_epochs:
                return self.warmup_start + (1 - self.warmup_start) * (epoch + 1) / self.warmup_epochs
            step = epoch * self.steps_per_epoch
        warm = self.warmup_epochs * self.steps_per_epoch
        if step < warm:
            return self.warmup_start + (1 - self.warmup_start) * step / warm
        if self.name == "step":
            # integer comparison on steps: the drop happens exactly at the milestone's first step
            passed = sum(step >= m * self.steps_per_epoch for m in self.milestones)
            return self.gamma ** passed
        total = self.epochs * self.steps_per_epoch - warm
        progress = min(max((step - warm) / max(total, 1), 0.0), 1.0)
        return self.final_lr + (1 - self.final_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def lr_at(schedule: Schedule, base_lr: float, step: int) -> float:
    """The learning rate for optimizer step ``step``."""
    return base_lr * schedule.factor(step)
