"""One optimizer step and one evaluation pass: the only place an optimizer step happens, and how a model is
measured on a val loader (the Trainer, evaluate, benchmarks and tests call these)."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..crops import mean_over_crops
from ..models.blocks import drawn_drops
from ..models.ghost_bn import later_micro_batch
from .metrics import Meter
from .precision import Precision


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, precision: Precision, criterion: nn.Module, micro: int = 1,
               clip: float = 0.0, drops: tuple[list[nn.Module], torch.Tensor] | None = None):
    """One optimizer step in the one precision path, over ``micro`` micro-batches of the batch (gradient
    accumulation: DDP all-reduces on the last only), the gradient's global norm clipped to ``clip`` (> 0;
    unscaled first under fp16); ``drops``: (the blocks with a drop rate, the batch's rows of their draws:
    engine.depth). Returns (loss, logits) of the batch, on the device."""
    optimizer.zero_grad(set_to_none=True)
    blocks, draws = drops if drops is not None else ([], None)
    if micro == 1:
        with precision.autocast(), drawn_drops(blocks, draws):
            logits = model(x)
            loss = criterion(logits.float(), y)
        scaler.scale(loss).backward()
    else:
        losses, outs = [], []
        parts = draws.chunk(micro) if draws is not None else [None] * micro
        for i, (xi, yi, di) in enumerate(zip(x.chunk(micro), y.chunk(micro), parts, strict=True)):
            last = i == micro - 1
            with contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync(), \
                    later_micro_batch(model) if i else contextlib.nullcontext(), drawn_drops(blocks, di):
                with precision.autocast():
                    out = model(xi)
                    part = criterion(out.float(), yi)
                scaler.scale(part / micro).backward()  # the mean over the batch, as one step would take it
            losses.append(part.detach())
            outs.append(out.detach())
        loss, logits = torch.stack(losses).mean(), torch.cat(outs)
    if clip > 0:
        scaler.unscale_(optimizer)  # fp16: the true gradient (and the overflow check) before its norm is taken
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip)
    scaler.step(optimizer)  # fp16: skips the update when gradients overflowed (not a failure)
    scaler.update()
    return loss, logits


@torch.no_grad()
def evaluate(model: nn.Module, loader, precision: Precision) -> dict[str, float]:
    """Loss and top-1/top-5 error over the whole evaluation set (each sample once over all ranks)."""
    was_training = model.training
    model.eval()
    meter = Meter(next(model.parameters()).device)
    loader.set_epoch(0)
    for x, y in loader:  # a ten-crop loader: ten rows per label, averaged back to one (resnext.crops)
        with precision.autocast():
            logits = mean_over_crops(model(x), loader.crops)
        meter.update(nn.functional.cross_entropy(logits.float(), y), logits, y)
    model.train(was_training)
    return meter.reduce()  # sync: all ranks' counts summed exactly
