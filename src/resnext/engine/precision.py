"""The one precision path: autocast (bf16/fp16/off) + GradScaler (fp16 only) + memory format."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    name: str  # fp32 | bf16 | fp16
    device_type: str  # cpu | cuda
    channels_last: bool  # NHWC model weights and inputs
    loss_scale: float = 2.0**16  # fp16: GradScaler's initial scale
    loss_scale_growth: int = 2000  # fp16: steps without an overflow before the scale doubles

    @property
    def amp_dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    @property
    def input_dtype(self) -> torch.dtype:
        """Images are delivered in fp16 for fp16 training (half the transfer), fp32 otherwise."""
        return torch.float16 if self.name == "fp16" else torch.float32

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device_type, dtype=self.amp_dtype, enabled=self.name != "fp32")

    def scaler(self) -> torch.amp.GradScaler:
        """Dynamic loss scaling from ``loss_scale``: halved on an overflow (the step skipped), doubled after
        ``loss_scale_growth`` clean steps; disabled (a pass-through) for fp32 and bf16."""
        return torch.amp.GradScaler(self.device_type, init_scale=self.loss_scale, growth_factor=2.0,
                                    backoff_factor=0.5, growth_interval=self.loss_scale_growth,
                                    enabled=self.name == "fp16")


def resolve(precision: str, channels_last: str, device: torch.device, loss_scale: float = 2.0**16,
            loss_scale_growth: int = 2000) -> Precision:
    """The trainer's settings on ``device`` (plan.precision_of: bf16 + channels_last on CUDA, fp32 on CPU)."""
    from ..plan import precision_of

    name, cl = precision_of(precision, channels_last, device.type)
    return Precision(name, device.type, cl, float(loss_scale), int(loss_scale_growth))
