"""The typed configuration schema (every key once, with its meaning) and its cross-field validation."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING, DictConfig, OmegaConf

from .data.plan import per_process
from .errors import ConfigError
from .models import FAMILIES, build_model, family_of
from .models.family import ModelConfig
from .optim import NO_DECAY

# The model node's keys are the selected family's: conf/model/<family>.yaml lists the family's dataclass
# (resnext.models.FAMILIES[<family>].config, stored below as schema/model/<family>) in its defaults.

EVAL_CROP_FRACTION = 0.875  # evaluation center crop / resized shorter side (224 of 256, the model cards')


def eval_resize(image_size: int) -> int:
    """The evaluation resize that goes with a crop size: round(size / 0.875) (256 for 224, 37 for 32)."""
    return round(int(image_size) / EVAL_CROP_FRACTION)


def cores_per_process() -> int:
    """The CPU cores this process may use (its affinity) shared by the processes on this node
    (torchrun's LOCAL_WORLD_SIZE, else 1); at least 1."""
    return max(1, len(os.sched_getaffinity(0)) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)))


def auto_workers() -> int:
    """data.workers by default: a core of this process's share left to the training thread(s), the rest
    (at most 8) to the loader; 0 (load in the main process) when the share is a single core."""
    return min(8, cores_per_process() - 1)


def reads_folder(data: DictConfig) -> bool:
    """Whether the data config reads a JPEG folder (ImageNet layout), decoded by loader workers, rather than
    an in-memory set (CIFAR, digits) or synthetic data."""
    return data.dataset == "imagenet" and data.backend != "synthetic"


def loader_workers(cfg: DictConfig) -> int:
    """The data.workers that run beside training: those of a JPEG folder (in-memory sets have none)."""
    return int(cfg.data.workers) if reads_folder(cfg.data) else 0


def threads_for(cfg: DictConfig) -> int:
    """trainer.threads resolved: the number asked for, else OMP_NUM_THREADS when set, else this process's
    cores less its loader workers (at least 1): compute threads that wait on a busy core stall every op."""
    if cfg.trainer.threads > 0:
        return int(cfg.trainer.threads)
    omp = os.environ.get("OMP_NUM_THREADS", "")
    return int(omp) if omp.isdigit() and int(omp) > 0 else max(1, cores_per_process() - loader_workers(cfg))


# Derived defaults are interpolations (the data loaders and config.yaml see plain numbers): registered with
# the schema, so every config made from it resolves them.
if not OmegaConf.has_resolver("resnext.eval_resize"):
    OmegaConf.register_new_resolver("resnext.eval_resize", eval_resize)
if not OmegaConf.has_resolver("resnext.auto_workers"):
    OmegaConf.register_new_resolver("resnext.auto_workers", auto_workers)


@dataclass
class DataConfig:
    dataset: str = "imagenet"  # imagenet | cifar10 | cifar100 | digits | synthetic
    root: str | None = None  # data folder (ImageNet: train/ and val/ class folders; CIFAR: pickle batches)
    backend: str = "auto"  # ImageNet loader: auto | dali_gpu | dali_cpu | torch (auto: dali_gpu on CUDA)
    batch_size: int = 256  # global mini-batch over all ranks (split evenly between them)
    eval_batch_size: int = 0  # global batch for evaluation; 0 = same as batch_size
    image_size: int = 224  # side of the square training crop
    val_resize: int = II("resnext.eval_resize:${.image_size}")  # evaluation: shorter side resized to this; default round(image_size / 0.875)
    val_crop: int = II(".image_size")  # evaluation: center crop of this side; default data.image_size
    eval_crops: int = 1  # evaluation crops per image: 1 (val_crop centre) | 10 (centre + corners, each mirrored; softmax mean)
    interpolation: str = "bilinear"  # ImageNet resize filter, training crops and evaluation: bilinear | bicubic
    min_area: float = 0.08  # smallest crop area fraction of the scale augmentation
    min_aspect: float = 0.75  # smallest crop aspect ratio (the largest is its inverse)
    color_jitter: float = 0.4  # brightness/contrast/saturation jitter strength; 0 = off
    lighting: float = 0.1  # std of AlexNet-style PCA lighting noise; 0 = off
    auto_augment: str = "none"  # none | ta_wide (TrivialAugmentWide) | randaugment: torchvision's policy after the crop and flip (DALI: the same draws per image, DALI's ops: resnext.data.policies)
    randaugment_ops: int = 2  # randaugment: operations per image
    randaugment_magnitude: int = 9  # randaugment: their magnitude (0..30)
    random_erase: float = 0.0  # probability of torchvision's RandomErasing on each normalized training image (any ImageNet loader); 0 = off
    mixup_alpha: float = 0.0  # Mixup: each training image blended with its BN-group neighbour, weight ~ Beta(alpha, alpha) per step, targets likewise; 0 = off
    cutmix_alpha: float = 0.0  # CutMix: a box of the neighbour pasted in, lam ~ Beta(alpha, alpha) per step (with Mixup on too, one of them per step, even odds); 0 = off
    pad: int = 4  # in-memory sets (CIFAR, digits): zero padding before the random crop
    flip: bool = True  # random horizontal flip (off for digits, whose mirror images are not digits)
    repeated_aug: int = 1  # torchvision's --ra-reps: each image of the epoch's order comes this many times, differently augmented, its copies in different BN groups of one step (as its RASampler puts them on different GPUs); an epoch stays len(train) images; 1 = off
    keep_last_batch: bool = False  # train on an epoch's last partial batch too (fb.resnet.torch's loaders; rounded down to whole BN groups), not drop it
    workers: int = II("resnext.auto_workers:")  # loader processes/threads per rank; default min(8, cores per process - 1); 0 = in the main process
    file_list: str | None = None  # optional "relative/path label" list instead of scanning train/
    prescan: bool = True  # JPEG folders: check every training file's header and ending before the first step (new or changed files only on a resume)
    val_fraction: float = 0.0  # JPEG folder without val/: hold out this fraction of each class of train/ for evaluation (chosen by file name, recorded in the run dir); 0 = val/ needed
    synthetic_train: int = 1024  # synthetic data set: training samples
    synthetic_val: int = 256  # synthetic data set: validation samples
    synthetic_size: int = 224  # synthetic data set: image side


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd (momentum, Nesterov) | adamw (decoupled weight decay: torch.optim.AdamW) | lamb (layer-wise trust ratio: resnext.lamb)
    lr: float = 0.1  # learning rate for a global batch of ref_batch images (linear scaling rule)
    ref_batch: int = 256  # batch the base lr is quoted for: lr_used = lr * batch_size / ref_batch
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = True  # Nesterov momentum (the Torch reference's default)
    weight_decay: float = 1e-4  # L2 weight decay
    no_decay: str = "none"  # parameters without weight decay: none | bn_and_bias | bn | bn_named (resnext.optim)
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    foreach: bool | None = None  # multi-tensor SGD update; null = PyTorch's choice (on GPU only: 7% slower on CPU)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw, lamb: running-average factors of the gradient and its square
    eps: float = 1.0e-8  # adamw, lamb (its paper uses 1e-6): added to the root of the squared-gradient average
    clip_grad_norm: float = 0.0  # clip the gradient's global L2 norm to this before each step (fp16: after unscaling); 0 = off
    fused: bool | None = None  # one fused SGD kernel (fp16 loss scaling then unscales and skips on the device, no per-step host sync); null = on CUDA


@dataclass
class ScheduleConfig:
    name: str = "step"  # step (milestones x gamma) | cosine
    warmup_epochs: float = 0.0  # linear warmup length, from warmup_start x lr to lr
    warmup_start: float = 0.0  # lr factor at step 0 of the warmup
    milestones: list[int] = field(default_factory=lambda: [30, 60, 90])  # step: epochs where lr *= gamma
    gamma: float = 0.1  # step: lr factor at each milestone
    final_lr: float = 0.0  # cosine: lr factor reached at the last step
    granularity: str = "step"  # step: lr moves every step | epoch: once per epoch, from the epoch index (NVIDIA)


@dataclass
class TrainerConfig:
    epochs: int = 100  # training epochs
    seed: int = 0  # seeds weights, data order and augmentation
    device: str = "auto"  # auto (cuda if available) | cpu | cuda
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16 (with loss scaling)
    loss_scale: float = 65536.0  # fp16: the initial loss scale (PyTorch's GradScaler default 2**16)
    loss_scale_growth: int = 2000  # fp16: steps without an overflow before the loss scale doubles (PyTorch's 2000)
    channels_last: str = "auto"  # auto (on for CUDA) | true | false: NHWC model and input
    compile: bool = False  # torch.compile the model
    sync_bn: bool = False  # SyncBatchNorm across ranks (CUDA only)
    eval_every: int = 1  # evaluate every N epochs (and always after the last)
    ema_decay: float = 0.0  # exponential moving average of the weights and BN buffers, evaluated and saved beside the model: avg = decay * avg + (1 - decay) * w per update; 0 = off
    ema_every: int = 1  # optimizer steps between EMA updates (torchvision's --model-ema-steps)
    ema_warmup_epochs: float = 0.0  # the EMA copies the weights until this many epochs are done (torchvision restarts it during the lr warmup)
    log_every: int = 50  # steps between metrics.jsonl/TensorBoard step records (the only loss syncs)
    progress: bool = True  # tqdm progress bar on rank 0
    threads: int = 0  # CPU threads per process (torch.set_num_threads); 0 = OMP_NUM_THREADS, else cores - workers
    checkpoint_every_minutes: float = 0.0  # also save last.pt this often inside an epoch; 0 = epoch ends only
    max_steps_per_epoch: int = 0  # cap on steps per epoch (quick runs, benchmarks); 0 = full epoch
    cudnn_benchmark: bool = True  # let cuDNN pick the fastest kernels (CUDA)
    fail_on_nonfinite: bool = True  # stop at the first non-finite loss (fp16 scale skips excepted)
    accept_changes: list[str] = field(default_factory=list)  # keys a resume may change from the saved config.yaml
    accumulate: str = "1"  # micro-batches per optimizer step (gradient accumulation), or auto: see max_micro_batch
    max_micro_batch: int = 0  # accumulate=auto: the fewest micro-batches of at most this many images per process


@dataclass
class PaperConfig:
    table: str | None = None  # the paper's table or figure this recipe reproduces
    row: str | None = None  # the row within it
    top1_err: float | None = None  # the paper's top-1 error (%)
    top5_err: float | None = None  # the paper's top-5 error (%)
    params_m: float | None = None  # the paper's parameter count (millions)
    gflops: float | None = None  # the paper's multiply-adds per image (billions)


@dataclass
class Config:
    name: str = MISSING  # run name (the recipe's); the run directory is outputs/<name>
    model: ModelConfig = field(default_factory=ModelConfig)  # one family's node (its own keys), see above
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    paper: PaperConfig = field(default_factory=PaperConfig)


def register() -> None:
    """Register the schema as ``base_config`` (conf/config.yaml lists it first in its defaults), each family's
    model node as ``schema/model/<family>`` (conf/model/<family>.yaml lists it in its defaults) and the
    sweeper of multiruns as ``hydra/sweeper/checked``."""
    store = ConfigStore.instance()
    store.store(name="base_config", node=Config)
    for name, family in FAMILIES.items():
        store.store(group="schema/model", name=name, node=family.config)
    # train.py -m: each point composed once and checked before any runs (src/hydra_plugins/resnext_sweeper)
    store.store(group="hydra/sweeper", name="checked", provider="resnext",
                node={"_target_": "hydra_plugins.resnext_sweeper.CheckedSweeper", "max_batch_size": None,
                      "params": None})  # the keys of Hydra's basic sweeper (hydra.sweeper.params: the swept values)


def schema_for(model: object) -> DictConfig:
    """The schema whose model node is the family ``model`` (a config mapping) names, holding its values.

    For configs read back from run directories. ConfigError for an unknown family or a key it lacks.
    """
    try:
        family = family_of(model)
        node = family.config_from(str(model["arch"]), {k: v for k, v in model.items() if k != "arch"})
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"model.{e}" if not isinstance(e, KeyError) else "model.arch is missing") from None
    cfg = OmegaConf.structured(Config)
    cfg.model = OmegaConf.structured(node)
    return cfg


CHOICES = {
    "model.arch": tuple(FAMILIES),
    "data.dataset": ("imagenet", "cifar10", "cifar100", "digits", "synthetic"),
    "data.backend": ("auto", "dali_gpu", "dali_cpu", "torch", "synthetic"),
    "data.interpolation": ("bilinear", "bicubic"),
    "data.eval_crops": ("1", "10"),
    "model.bn_stats": ("mean", "first"),
    "data.auto_augment": ("none", "ta_wide", "randaugment"),
    "schedule.name": ("step", "cosine"),
    "schedule.granularity": ("step", "epoch"),
    "optim.no_decay": NO_DECAY,
    "optim.name": ("sgd", "adamw", "lamb"),
    "trainer.device": ("auto", "cpu", "cuda"),
    "trainer.precision": ("auto", "fp32", "bf16", "fp16"),
    "trainer.channels_last": ("auto", "true", "false"),
}
DATASET_CLASSES = {"cifar10": 10, "cifar100": 100, "digits": 10}


def classes_before_data(model_classes: int, dataset: str) -> int:
    """The classifier's outputs as far as a config tells before any data is read: model.num_classes, or where
    it is 0 ("from the data") the data set's known count (CIFAR, digits), else ImageNet's 1000 (a folder's
    count is known once scanned: RunPlan.with_data)."""
    return int(model_classes or 0) or DATASET_CLASSES.get(str(dataset), 1000)


def _get(cfg: DictConfig, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def check_model(m: DictConfig) -> None:
    """The model node is the family its arch names, and that family builds it (checked on the meta device)."""
    if str(m.arch) not in FAMILIES:
        raise ConfigError(f"model.arch={m.arch!r} is not valid; choose one of {', '.join(FAMILIES)}")
    if OmegaConf.get_type(m) not in (FAMILIES[str(m.arch)].config, dict, None):
        raise ConfigError(f"model.arch={m.arch} but the model node is {OmegaConf.get_type(m).__name__}; "
                          f"select the family with model={m.arch}")
    try:
        with torch.device("meta"):
            build_model(m, num_classes=m.num_classes or 1)
    except ValueError as e:
        raise ConfigError(f"model.{e}") from None


ZERO_MEANS = {"data.pad": "no padding", "data.eval_batch_size": "data.batch_size", "data.workers": "in the "
              "main process", "data.color_jitter": "off", "data.lighting": "off"}


def _has(cfg: DictConfig, dotted: str) -> bool:
    return OmegaConf.select(cfg, dotted, default="__absent__") != "__absent__"


def micro_batches(cfg: DictConfig, world_size: int) -> int:
    """Micro-batches per optimizer step (trainer.accumulate, auto resolved); ConfigError if the per-process
    batch does not split into them, or a micro-batch not into model.bn_batch groups."""
    t, per_rank = cfg.trainer, per_process(cfg.data, max(world_size, 1))[0]
    bn = int(cfg.model.get("bn_batch", 0) or 0)
    if bn < 0:
        raise ConfigError(f"model.bn_batch={bn} must be >= 0 (0 = each process's batch)")
    raw = str(t.accumulate).strip().lower()
    if raw == "auto":
        if t.max_micro_batch < 1:
            raise ConfigError("trainer.accumulate=auto needs trainer.max_micro_batch >= 1 (images per micro-batch)")
        fits = [k for k in range(1, per_rank + 1) if per_rank % k == 0 and per_rank // k <= t.max_micro_batch
                and (not bn or (per_rank // k) % bn == 0 or per_rank // k < bn)]
        if not fits:
            raise ConfigError(f"no micro-batch of at most trainer.max_micro_batch={t.max_micro_batch} images "
                              f"divides the per-process batch {per_rank} (and model.bn_batch={bn})")
        k = fits[0]
    elif raw.isdigit() and int(raw) >= 1:
        k = int(raw)
    else:
        raise ConfigError(f"trainer.accumulate={t.accumulate!r} is not valid; give a count >= 1 or auto")
    if per_rank % k:
        raise ConfigError(f"trainer.accumulate={k} does not divide the per-process batch {per_rank} "
                          f"(data.batch_size={cfg.data.batch_size} over {world_size} process(es))")
    micro = per_rank // k
    if bn and micro > bn and micro % bn:
        raise ConfigError(f"model.bn_batch={bn} does not divide the micro-batch of {micro} images; choose a "
                          f"divisor of {micro} or another trainer.accumulate")
    return k


def validate(cfg: DictConfig, world_size: int = 1, cuda: bool = False) -> None:
    """Check the cross-field rules; raise ConfigError with one line naming the key and what is valid."""
    for key, choices in CHOICES.items():
        value = str(_get(cfg, key)).lower()
        if value not in choices:
            raise ConfigError(f"{key}={_get(cfg, key)!r} is not valid; choose one of {', '.join(choices)}")
    m, d, o, s, t = cfg.model, cfg.data, cfg.optim, cfg.schedule, cfg.trainer
    if m.num_classes < 0:
        raise ConfigError(f"model.num_classes={m.num_classes} must be >= 1, or 0 to take the data set's count")
    check_model(m)
    for key in ("data.batch_size", "data.image_size", "data.val_resize", "data.val_crop", "data.synthetic_train",
                "data.synthetic_val", "data.synthetic_size", "trainer.epochs", "optim.ref_batch",
                "trainer.eval_every", "trainer.log_every"):
        if _get(cfg, key) < 1:
            raise ConfigError(f"{key}={_get(cfg, key)} must be >= 1")
    for key in ("data.pad", "data.eval_batch_size", "data.workers", "data.color_jitter", "data.lighting"):
        if _get(cfg, key) < 0:
            raise ConfigError(f"{key}={_get(cfg, key)} must be >= 0 (0 = {ZERO_MEANS[key]})")
    if not 0 <= d.val_fraction < 1:
        raise ConfigError(f"data.val_fraction={d.val_fraction} must be in [0, 1) (0 = evaluate on val/)")
    policies = d.auto_augment != "none" or d.random_erase > 0
    if policies and d.dataset != "imagenet":
        raise ConfigError(f"data.auto_augment={d.auto_augment} / data.random_erase={d.random_erase} run in the "
                          f"ImageNet loaders (torch, dali_cpu, dali_gpu) on a JPEG folder, not on data.dataset={d.dataset}")
    if not 0 <= d.random_erase <= 1 or not 0 <= d.randaugment_magnitude <= 30 or d.randaugment_ops < 1:
        raise ConfigError(f"data.random_erase={d.random_erase} must be a probability, data.randaugment_ops="
                          f"{d.randaugment_ops} >= 1 and data.randaugment_magnitude={d.randaugment_magnitude} in 0..30")
    if d.repeated_aug < 1:
        raise ConfigError(f"data.repeated_aug={d.repeated_aug} must be >= 1 (1 = each image once per epoch; "
                          "torchvision's V2 recipe uses 4)")
    if d.mixup_alpha < 0 or d.cutmix_alpha < 0:
        raise ConfigError(f"data.mixup_alpha={d.mixup_alpha} and data.cutmix_alpha={d.cutmix_alpha} must be >= 0 "
                          "(0 = off; torchvision's recipes use 0.2 and 1.0)")
    if not 0 <= t.ema_decay < 1 or t.ema_every < 1 or t.ema_warmup_epochs < 0:
        raise ConfigError(f"trainer.ema_decay={t.ema_decay} must be in [0, 1) (0 = off), trainer.ema_every="
                          f"{t.ema_every} >= 1 and trainer.ema_warmup_epochs={t.ema_warmup_epochs} >= 0")
    if o.clip_grad_norm < 0:
        raise ConfigError(f"optim.clip_grad_norm={o.clip_grad_norm} must be >= 0 (0 = no clipping)")
    if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
        raise ConfigError(f"optim.betas={list(o.betas)} must be two factors in [0, 1), e.g. [0.9, 0.999]")
    micro_batches(cfg, world_size)  # raises ConfigError when the batch does not split
    if m.bn_stats == "first" and not m.get("bn_batch", 0):
        raise ConfigError("model.bn_stats=first takes the running statistics from the first BN group of a step; "
                          "set model.bn_batch (the images per group) too, or model.bn_stats=mean")
    if m.get("bn_batch", 0) and t.sync_bn:
        raise ConfigError("model.bn_batch and trainer.sync_bn exclude each other: ghost BN fixes the images per "
                          "statistic, SyncBatchNorm spreads one statistic over all ranks")
    unknown = [k for k in t.accept_changes if not _has(cfg, k)]
    if unknown:
        raise ConfigError(f"trainer.accept_changes names {', '.join(unknown)}, not keys of the config "
                          "(give dotted keys such as optim.lr)")
    if d.batch_size % world_size:
        raise ConfigError(f"data.batch_size={d.batch_size} is the global batch and must be divisible by "
                          f"the world size {world_size} (e.g. {world_size * max(1, d.batch_size // world_size)})")
    eval_bs = d.eval_batch_size or d.batch_size
    if eval_bs % world_size:
        raise ConfigError(f"data.eval_batch_size={eval_bs} must be divisible by the world size {world_size}")
    expected = DATASET_CLASSES.get(d.dataset)
    if expected is not None and m.num_classes not in (0, expected):
        raise ConfigError(f"model.num_classes={m.num_classes} but data.dataset={d.dataset} has {expected} classes")
    if not 0 < d.min_area <= 1:
        raise ConfigError(f"data.min_area={d.min_area} must be in (0, 1]")
    if not 0 < d.min_aspect <= 1:
        raise ConfigError(f"data.min_aspect={d.min_aspect} must be in (0, 1] (its inverse is the largest)")
    if d.val_crop > d.val_resize:
        raise ConfigError(f"data.val_crop={d.val_crop} must be <= data.val_resize={d.val_resize}")
    if o.lr <= 0 or o.weight_decay < 0 or not 0 <= o.momentum < 1:
        raise ConfigError(f"optim: need lr > 0, weight_decay >= 0, 0 <= momentum < 1 "
                          f"(got lr={o.lr}, weight_decay={o.weight_decay}, momentum={o.momentum})")
    if o.nesterov and o.momentum == 0:
        raise ConfigError("optim.nesterov=true needs optim.momentum > 0")
    if not 0 <= o.label_smoothing < 1:
        raise ConfigError(f"optim.label_smoothing={o.label_smoothing} must be in [0, 1)")
    if s.warmup_epochs < 0 or s.warmup_epochs >= t.epochs:
        raise ConfigError(f"schedule.warmup_epochs={s.warmup_epochs} must be in [0, trainer.epochs={t.epochs})")
    if s.name == "step":
        ms = list(s.milestones)
        if ms != sorted(ms) or any(not 0 < e <= t.epochs for e in ms):
            raise ConfigError(f"schedule.milestones={ms} must be increasing epochs in (0, trainer.epochs={t.epochs}]; "
                              f"give milestones within the run (e.g. schedule.milestones=[{', '.join(str(m) for m in sorted({max(1, round(t.epochs * f)) for f in (0.3, 0.6, 0.9)}))}]) or use schedule=cosine")
    device = str(t.device)
    if device == "cuda" and not cuda:
        raise ConfigError("trainer.device=cuda but no CUDA device is visible; use trainer.device=cpu or auto")
    on_cuda = device == "cuda" or (device == "auto" and cuda)
    if t.precision == "fp16" and not on_cuda:
        raise ConfigError("trainer.precision=fp16 (loss scaling) needs CUDA; on CPU use bf16 or fp32")
    if t.sync_bn and not on_cuda:
        raise ConfigError("trainer.sync_bn=true needs CUDA (PyTorch's SyncBatchNorm runs on GPUs only)")
    if d.backend == "dali_gpu" and not on_cuda:
        raise ConfigError("data.backend=dali_gpu needs CUDA; use dali_cpu, torch or auto")
    if reads_folder(d) and not d.root:
        raise ConfigError("data.root is not set; give the ImageNet folder holding train/ and val/ "
                          "(e.g. data.root=/data/imagenet)")
    if d.dataset in ("cifar10", "cifar100") and not d.root:
        raise ConfigError(f"data.root is not set; give the folder holding the {d.dataset} python batches")
    if t.checkpoint_every_minutes < 0 or t.max_steps_per_epoch < 0:
        raise ConfigError("trainer.checkpoint_every_minutes and trainer.max_steps_per_epoch must be >= 0")
    if s.granularity == "epoch" and s.warmup_epochs != int(s.warmup_epochs):
        raise ConfigError(f"schedule.warmup_epochs={s.warmup_epochs} must be a whole number of epochs "
                          "with schedule.granularity=epoch")
    if t.loss_scale <= 0 or t.loss_scale_growth < 1:
        raise ConfigError(f"trainer.loss_scale={t.loss_scale} must be > 0 and trainer.loss_scale_growth="
                          f"{t.loss_scale_growth} >= 1 (steps between doublings)")
    if t.threads < 0:
        raise ConfigError(f"trainer.threads={t.threads} must be >= 0 (0 = OMP_NUM_THREADS if set, else this "
                          "process's share of the cores less its loader workers)")
