"""Parameter count and multiply-adds of a model, measured on the meta device or on fake tensors (instant at any
size)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Complexity:
    params: int  # number of trainable parameters
    macs: int  # multiply-adds for one image (the paper's "FLOPs")

    @property
    def gflops(self) -> float:
        """Multiply-adds in billions, as the paper reports them."""
        return self.macs / 1e9


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure(build: Callable[[], nn.Module], image_size: int) -> Complexity:
    """Build the model on the meta device and count params and multiply-adds for one image."""
    with torch.device("meta"):
        model = build()
        x = torch.empty(1, 3, image_size, image_size)
    return _count(model, x)


def measure_model(model: nn.Module, image_size: int) -> Complexity:
    """Params and multiply-adds for one image of a model already built (the bare network, on any device; not a
    DDP wrapper, whose forward would talk to its peers), without building it again or computing anything: the
    forward runs on fake tensors (shapes only); the model is left as it was."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    device = next(model.parameters()).device
    with FakeTensorMode(allow_non_fake_inputs=True):
        return _count(model, torch.empty(1, 3, image_size, image_size, device=device))


def _count(model: nn.Module, x: torch.Tensor) -> Complexity:
    modes = [(m, m.training) for m in model.modules()]  # each module's own mode, put back after
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            model(x)
    finally:
        for m, training in modes:
            m.training = training
    # FlopCounterMode counts 2 FLOPs per multiply-add for convolutions and matmuls.
    return Complexity(params=count_params(model), macs=counter.get_total_flops() // 2)


def saved_activation_bytes(model: nn.Module, x: torch.Tensor, autocast: Callable | None = None) -> int:
    """Bytes autograd keeps for backward after one training-mode forward of ``x`` (each storage once,
    parameters and the input left out): the activation memory a training step holds at its peak."""
    skip = {p.untyped_storage().data_ptr() for p in model.parameters()} | {x.untyped_storage().data_ptr()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in skip and s.device.type != "meta":
            seen[s.data_ptr()] = s.nbytes()
        return t

    was = model.training
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), (autocast or contextlib.nullcontext)():
        out = model(x)
    model.train(was)
    del out
    return sum(seen.values())
