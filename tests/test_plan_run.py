"""The run plan: every derived number of a run computed once from (config, world), completed by the data."""

from __future__ import annotations

import pytest

from resnext.compose import compose_config
from resnext.errors import ConfigError
from resnext.plan import RunPlan


@pytest.mark.parametrize("world, overrides, expect", [
    # (batch, eval batch, micro-batches, micro-batch, BN images) of the paper's 256 with BN over 32
    (8, [], (32, 32, 1, 32, 32)),
    (4, ["trainer.accumulate=2"], (64, 64, 2, 32, 32)),
    (1, ["trainer.accumulate=8"], (256, 256, 8, 32, 32)),
    (1, [], (256, 256, 1, 256, 32)),  # ghost BN: 8 groups of 32 in one pass
    (2, ["model.bn_batch=0", "trainer.accumulate=2", "data.eval_batch_size=100"], (128, 50, 2, 64, 64)),
])
def test_the_batch_split_of_a_run(world, overrides, expect):
    cfg = compose_config(["+recipe=resnext50_32x4d_imagenet", "data.root=/d", *overrides])
    plan = RunPlan.of(cfg, world)
    assert (plan.batch, plan.eval_batch, plan.micro_batches, plan.micro_batch, plan.bn_images) == expect
    assert plan.global_batch == 256 and plan.world_size == world and plan.folder
    assert plan.describe() == (f"batch 256 = {world} process(es) x {expect[2]} micro-batch(es) x {expect[3]}, "
                               f"BN over {expect[4]} images")


def test_the_data_completes_the_plan():
    """Classes from the data when model.num_classes is 0, a pinned count checked against it in one line, and
    the epoch's steps capped by trainer.max_steps_per_epoch; in-memory data has no loader workers."""
    cfg = compose_config(["+recipe=resnext29_demo_digits", "model.num_classes=0", "trainer.max_steps_per_epoch=7"])
    plan = RunPlan.of(cfg, 1)
    assert not plan.folder and plan.workers == 0 and plan.classes == 0
    done = plan.with_data(cfg, 10, [str(i) for i in range(10)], 44)
    assert (done.classes, done.steps_per_epoch, done.class_names[:2]) == (10, 7, ("0", "1"))
    pinned = compose_config(["+recipe=resnext29_demo_digits", "model.num_classes=12"])
    with pytest.raises(ConfigError, match=r"^model.num_classes=12 but the data set has 10 classes \(set "):
        RunPlan.of(pinned, 1).with_data(pinned, 10, None, 44)
    with pytest.raises(ConfigError, match=r"^the data set has 1 class\(es\); a classifier needs at least 2"):
        plan.with_data(cfg, 1, None, 44)


@pytest.mark.parametrize("cuda, overrides, expect", [
    (False, [], ("cpu", "fp32", False)),  # auto on a machine without a GPU
    (True, [], ("cuda", "bf16", True)),  # auto on a GPU machine: bf16, channels_last
    (True, ["trainer.device=cpu"], ("cpu", "fp32", False)),
    (True, ["trainer.precision=fp16", "trainer.channels_last=false"], ("cuda", "fp16", False)),
    (False, ["trainer.precision=bf16", "trainer.channels_last=true"], ("cpu", "bf16", True)),
])
def test_the_plan_resolves_device_precision_and_layout(cuda, overrides, expect, monkeypatch):
    """trainer.device, precision and channels_last resolved once, in the plan (the session builds the
    precision path and picks the device from it), and the compute threads: trainer.threads when set, else
    OMP_NUM_THREADS."""
    cfg = compose_config(["+recipe=resnext50_32x4d_imagenet", "data.root=/d", *overrides])  # (digits pins cpu)
    plan = RunPlan.of(cfg, 1, cuda)
    assert (plan.device, plan.precision, plan.channels_last) == expect
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert RunPlan.of(cfg, 1).threads == 3
    assert RunPlan.of(compose_config(["+recipe=resnext29_demo_digits", "trainer.threads=5"]), 1).threads == 5
