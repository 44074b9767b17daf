"""`bench data ROOT`: each ImageNet backend's images/s against torchvision ImageFolder + DataLoader."""

from __future__ import annotations

import argparse

import torch
import yaml
from omegaconf import OmegaConf

from ..config import DataConfig
from ..data.base import Placement
from ..data.imagenet import build_imagenet
from ..data.imagenet_folder import MEAN, STD
from ..data.plan import per_process
from ..errors import ConfigError
from .common import environment, interleaved, paired_ratio, table


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", help="ImageNet-layout folder (python -m resnext.data make-fake makes one)")
    p.add_argument("--batch", type=int, default=64, help="images per batch")
    p.add_argument("--workers", type=int, default=2, help="threads (DALI) / processes (DataLoader), all alike")
    p.add_argument("--size", type=int, default=224, help="training crop")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs (median reported)")
    p.add_argument("--backends", default="auto", help="comma list of dali_gpu,dali_cpu,torch (auto: what runs here)")
    p.add_argument("--with", dest="extra", default="",
                   help="also time each backend with these data overrides (space-separated, e.g. the recipe beyond "
                        "the paper's 'data.auto_augment=ta_wide data.random_erase=0.1') against it without")


def run(args) -> dict:
    import torchvision
    from torchvision import transforms as T

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    backends = (["dali_gpu"] if cuda else []) + ["dali_cpu", "torch"] if args.backends == "auto" else \
        args.backends.split(",")
    # the reference does crop + flip + normalize only: ours do the same work (no jitter/lighting)
    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), {
        "root": args.root, "batch_size": args.batch, "image_size": args.size, "workers": args.workers,
        "color_jitter": 0.0, "lighting": 0.0})
    extra = with_overrides(args.extra)
    runs = {}
    for b in backends:
        for name, more in ((b, {}), (f"{b} + with", extra)) if extra else ((b, {}),):
            c = OmegaConf.merge(cfg, {"backend": b}, more)
            place = Placement(0, 1, device, torch.float32, cuda, 0, *per_process(c, 1))  # one process: whole batches
            loader = build_imagenet(c, place).train
            epoch = [0]

            def one_epoch(loader=loader, epoch=epoch) -> int:
                epoch[0] += 1
                loader.set_epoch(epoch[0])
                return sum(x.shape[0] for x, _ in loader)

            runs[name] = one_epoch
    tf = T.Compose([T.RandomResizedCrop(args.size), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    ref = torch.utils.data.DataLoader(torchvision.datasets.ImageFolder(f"{args.root}/train", tf), batch_size=args.batch,
                                      shuffle=True, drop_last=True, num_workers=args.workers,
                                      persistent_workers=args.workers > 0, pin_memory=cuda)

    def reference() -> int:
        return sum(x.to(device, non_blocking=True).shape[0] for x, _ in ref)

    runs["reference (ImageFolder + DataLoader)"] = reference
    res = interleaved(runs, device, args.repeats)
    base = res["reference (ImageFolder + DataLoader)"]["images_per_s"]
    rows = [{"name": k, "images_per_s": v["images_per_s"], "ratio_vs_reference": v["images_per_s"] / base,
             "all_images_per_s": v["all_images_per_s"], "images": v["images"],
             "with_vs_without": paired_ratio(res, k, k.removesuffix(" + with")) if k.endswith(" + with") else None}
            for k, v in res.items()]
    settings = vars(args) | {"train_images": len(ref.dataset), "images_per_epoch": len(ref) * args.batch,
                             "with": {f"data.{k}": v for k, v in extra.items()},
                             "augmentation": "crop 8%-100%, aspect 3/4-4/3, resize, flip, normalize (no jitter)",
                             "timing": f"1 warm-up epoch each, then {args.repeats} interleaved epochs; median",
                             "environment": environment(device)}
    return {"rows": rows, "settings": settings,
            "table": table(rows, [("name", "loader", ""), ("images_per_s", "images/s", ".0f"),
                                  ("ratio_vs_reference", "vs reference", ".2f"),
                                  *([("with_vs_without", "with --with / without", ".3f")] if extra else [])])}


def with_overrides(text: str) -> dict:
    """--with's 'data.KEY=VALUE ...' as a data config merge (typed by the schema); one line on a bad key."""
    out = {}
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("data.") or key[5:] not in DataConfig.__dataclass_fields__:
            raise ConfigError(f"bench data --with {item!r}: give data.KEY=VALUE with a data key, "
                              "e.g. data.auto_augment=ta_wide")
        out[key[5:]] = yaml.safe_load(value) if value else value  # 0.1 a number, ta_wide a string
    OmegaConf.merge(OmegaConf.structured(DataConfig), out)  # a wrong type fails here, before any loader
    return out
