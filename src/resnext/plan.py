"""The run plan: every number a run derives from its config and its world, computed once and read by all."""

from __future__ import annotations

from dataclasses import dataclass, replace

from omegaconf import DictConfig

from .config import loader_workers, micro_batches, reads_folder, threads_for
from .data.plan import per_process
from .errors import ConfigError


def device_type(choice: str, cuda: bool) -> str:
    """trainer.device resolved: cuda when asked for, or under auto when the machine has a GPU; else cpu."""
    return "cuda" if choice == "cuda" or (choice == "auto" and cuda) else "cpu"


def precision_of(precision: str, channels_last: str, device: str) -> tuple[str, bool]:
    """(trainer.precision, trainer.channels_last) resolved on ``device``: auto is bf16 and channels_last on
    CUDA, fp32 and NCHW on the CPU."""
    on_cuda = device == "cuda"
    name = ("bf16" if on_cuda else "fp32") if precision == "auto" else str(precision)
    return name, on_cuda if str(channels_last) == "auto" else str(channels_last).lower() == "true"


@dataclass(frozen=True)
class RunPlan:
    """What a run is, in numbers: how each global batch is split and what the classifier predicts.

    ``RunPlan.of(cfg, world_size, cuda)`` needs the config and whether the machine has a GPU only (a resume
    can judge a saved run's plan before anything is built); ``with_data`` adds what the opened data set fixes
    (classes, steps per epoch).
    """

    world_size: int  # training processes
    global_batch: int  # images per optimizer step over all processes (data.batch_size)
    batch: int  # images per optimizer step in each process
    eval_batch: int  # evaluation images per batch in each process
    micro_batches: int  # forward/backward passes per optimizer step (trainer.accumulate resolved)
    micro_batch: int  # images per pass
    bn_images: int  # images per BN statistic in training (model.bn_batch, else each micro-batch)
    last_batch_unit: int  # data.keep_last_batch: an epoch's last partial batch is kept as a multiple of this
    # many images (the step's BN groups, global_batch / bn_images: each group, rank and micro-batch gets an
    # equal share); 0 = dropped
    repeat_groups: int  # data.repeated_aug: a step's BN groups (global_batch / bn_images), over which an image's
    # copies spread; 1 when off
    folder: bool  # JPEG-folder data, decoded by loader workers
    workers: int  # loader workers beside training (0 for in-memory and synthetic data)
    device: str  # cuda | cpu: trainer.device resolved
    precision: str  # fp32 | bf16 | fp16: trainer.precision resolved on the device
    channels_last: bool  # trainer.channels_last resolved on the device
    threads: int  # compute threads of each process (trainer.threads, else OMP_NUM_THREADS, else its cores
    # less its loader workers)
    classes: int = 0  # classifier outputs: model.num_classes, or the data's count when that is 0 (with_data)
    class_names: tuple[str, ...] | None = None  # names by class index, where the data has them (with_data)
    steps_per_epoch: int = 0  # optimizer steps per epoch: the loader's, capped by trainer.max_steps_per_epoch

    @classmethod
    def of(cls, cfg: DictConfig, world_size: int, cuda: bool = False) -> RunPlan:
        """The plan of ``cfg`` on ``world_size`` processes of a machine with (``cuda``) or without a GPU
        (ConfigError where the batch does not split)."""
        batch, eval_batch = per_process(cfg.data, world_size)
        k = micro_batches(cfg, world_size)
        micro = batch // k
        bn = int(cfg.model.get("bn_batch", 0) or 0)
        bn_images = min(bn, micro) if bn else micro
        keep = bool(cfg.data.get("keep_last_batch", False))
        t = cfg.trainer
        device = device_type(str(t.device), cuda)
        precision, channels_last = precision_of(str(t.precision), str(t.channels_last), device)
        return cls(world_size=world_size, global_batch=int(cfg.data.batch_size), batch=batch, eval_batch=eval_batch,
                   micro_batches=k, micro_batch=micro, bn_images=bn_images,
                   last_batch_unit=int(cfg.data.batch_size) // bn_images if keep else 0,
                   repeat_groups=int(cfg.data.batch_size) // bn_images if int(cfg.data.get("repeated_aug", 1)) > 1
                   else 1,
                   folder=reads_folder(cfg.data), workers=loader_workers(cfg), device=device, precision=precision,
                   channels_last=channels_last, threads=threads_for(cfg))

    def with_data(self, cfg: DictConfig, num_classes: int, class_names, train_steps: int) -> RunPlan:
        """The plan once the data set is open: its class count (ConfigError if model.num_classes pins
        another), names and the steps of an epoch."""
        if num_classes < 2:
            raise ConfigError(f"the data set has {num_classes} class(es); a classifier needs at least 2 (with one it "
                              "learns to answer that class, at 0% error); give data.root a folder per class")
        pinned = int(cfg.model.num_classes or 0)
        if pinned and pinned != num_classes:
            raise ConfigError(f"model.num_classes={pinned} but the data set has {num_classes} classes "
                              f"(set model.num_classes={num_classes}, or 0 to take it from the data)")
        cap = int(cfg.trainer.max_steps_per_epoch or 0)
        return replace(self, classes=num_classes, class_names=tuple(class_names) if class_names else None,
                       steps_per_epoch=min(train_steps, cap) if cap else train_steps)

    def describe(self) -> str:
        """How a global batch is split: "batch 256 = 1 process(es) x 8 micro-batch(es) x 32, BN over 32 images"."""
        return (f"batch {self.global_batch} = {self.world_size} process(es) x {self.micro_batches} micro-batch(es) "
                f"x {self.micro_batch}, BN over {self.bn_images} images")
