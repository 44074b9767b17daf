"""Run under torchrun (or alone): evaluate a fixed model on CIFAR-format data, print exact counts as JSON."""

import json
import sys

import torch
from imagenet_data_helpers import loaders_for
from omegaconf import OmegaConf

from resnext.config import DataConfig
from resnext.data import Placement
from resnext.engine.dist import init_world, shutdown
from resnext.engine.precision import resolve
from resnext.engine.step import evaluate
from resnext.models import CifarResNeXt

world = init_world("cpu")
cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), {"dataset": "cifar10", "root": sys.argv[1],
                                                         "batch_size": 4, "eval_batch_size": 4})
loaders = loaders_for(cfg, Placement(world.rank, world.world_size, world.device, torch.float32, False, 0, 0, 0))
torch.manual_seed(0)
model = CifarResNeXt(depth=11, cardinality=2, width=2, num_classes=10).eval()
res = evaluate(model, loaders.val, resolve("fp32", "false", world.device))
if world.rank == 0:
    print(json.dumps(res))
shutdown()
