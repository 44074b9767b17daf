"""Decode one training batch (crop-region nvJPEG decoding) and one evaluation batch with dali_gpu; run in its
own process with `python -X faulthandler` so that a decoder crash (SIGSEGV) is reported with its stack and the
rest of bench/gpu_check.sh goes on. Usage: python -X faulthandler bench/gpu_decoder_probe.py IMAGENET_ROOT"""

from __future__ import annotations

import sys

import torch
from omegaconf import OmegaConf

from resnext.config import DataConfig
from resnext.data import Placement, build_loaders


def main(root: str) -> int:
    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), {
        "root": root, "backend": "dali_gpu", "batch_size": 16, "image_size": 64, "workers": 2})
    loaders = build_loaders(cfg, Placement(0, 1, torch.device("cuda", 0), torch.float32, True, 0, 16, 16))
    for name, loader in (("train", loaders.train), ("val", loaders.val)):
        x, y = next(iter(loader))
        torch.cuda.synchronize()
        ok = x.is_cuda and bool(torch.isfinite(x).all()) and float(x.float().std()) > 0.1
        print(f"{name}: {tuple(x.shape)} {x.dtype} on {x.device}, labels {y[:4].tolist()}, "
              f"mean {x.float().mean():.3f} std {x.float().std():.3f}: {'ok' if ok else 'WRONG'}")
        if not ok:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
