"""The per-rank sharding plan: exactly-once evaluation shards, equal training steps, seeded resumable order."""

from __future__ import annotations

import pytest
import torch

from resnext.data.plan import ShardPlan, epoch_permutation

SIZES = [0, 1, 2, 5, 7, 13, 37, 100]


def plans(size, batch, world, train, seed=0):
    return [ShardPlan(size, batch, r, world, seed, train) for r in range(world)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("batch", [1, 3, 4])
def test_eval_shards_cover_every_sample_exactly_once(size, world, batch):
    ranks = plans(size, batch, world, train=False)
    served = [p.indices(epoch=5)[0].tolist() for p in ranks]
    assert sum(served, []) == list(range(size))  # in order, no padding, no drops, no repeats
    counts = [p.num_samples for p in ranks]
    assert counts == [len(s) for s in served] and max(counts) - min(counts) <= (1 if size else 0)
    for p, s in zip(ranks, served, strict=True):
        lo, hi = p.bounds
        assert s == list(range(lo, hi))
        parts = [b.tolist() for _, b in p.batches(epoch=0)]
        assert p.steps == len(parts) == -(-p.num_samples // batch)
        assert all(len(b) == batch for b in parts[:-1]) and sum(parts, []) == s  # only the last is partial


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("batch", [1, 2, 5])
def test_train_ranks_take_equal_full_batches_and_drop_only_the_remainder(size, world, batch):
    ranks = plans(size, batch, world, train=True, seed=3)
    g = batch * world
    assert {p.steps for p in ranks} == {size // g}  # every rank the same number of steps
    assert all(p.num_samples == (size // g) * batch for p in ranks)
    served = [p.indices(epoch=2)[0].tolist() for p in ranks]
    assert all(len(s) == p.num_samples for s, p in zip(served, ranks, strict=True))
    for p in ranks:
        assert all(len(b) == batch for _, b in p.batches(epoch=2))  # only full batches
    seen = sum(served, [])
    assert len(seen) == len(set(seen)) == (size // g) * g  # disjoint over ranks
    perm = epoch_permutation(size, 3, 2).tolist()
    assert set(range(size)) - set(seen) == set(perm[(size // g) * g:])  # dropped: the order's tail


def test_ranks_split_each_global_batch_of_the_single_process_order():
    """Step k of rank r is the r-th part of step k of one process running the global batch: the
    samples of a step, and their positions (which seed augmentation), do not depend on world size."""
    one = ShardPlan(50, 12, 0, 1, 7, True)
    three = plans(50, 4, 3, True, seed=7)
    for k in (0, 1):  # indices, then positions
        whole = one.indices(epoch=4)[k].view(-1, 12)
        parts = torch.cat([p.indices(epoch=4)[k].view(-1, 4) for p in three], dim=1)
        assert whole.shape == (4, 12) and torch.equal(whole, parts)


def test_order_is_a_function_of_seed_and_epoch():
    p = ShardPlan(64, 8, 1, 2, 11, True)
    first = p.indices(epoch=3)[0]
    assert torch.equal(ShardPlan(64, 8, 1, 2, 11, True).indices(epoch=3)[0], first)  # rebuilt: the same
    assert not torch.equal(p.indices(epoch=4)[0], first)  # a new order each epoch
    assert not torch.equal(ShardPlan(64, 8, 1, 2, 12, True).indices(epoch=3)[0], first)  # and per seed
    perm = epoch_permutation(64, 11, 3)
    assert sorted(perm.tolist()) == list(range(64))
    assert all(torch.equal(q.order(3), perm) for q in plans(64, 8, 4, True, seed=11))  # shared by ranks
    assert torch.equal(first, perm[p.positions()])


def test_permutation_is_pinned():
    """The orders of runs made before the plan existed: a resume of such a run continues unchanged."""
    assert epoch_permutation(10, 0, 0).tolist() == [3, 1, 9, 6, 8, 5, 4, 2, 0, 7]
    assert epoch_permutation(10, 3, 2).tolist() == [9, 7, 0, 5, 1, 8, 4, 3, 2, 6]


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("start", [0, 1, 3, 6, 9])
def test_start_step_continues_the_full_epoch(train, start):
    p = ShardPlan(43, 3, 1, 2, 5, train)
    full_idx, full_pos = p.indices(epoch=1)
    idx, pos = p.indices(epoch=1, start_step=start)
    assert torch.equal(idx, full_idx[start * 3:]) and torch.equal(pos, full_pos[start * 3:])
    resumed = list(p.batches(epoch=1, start_step=start))
    whole = list(p.batches(epoch=1))
    assert [s for s, _ in resumed] == list(range(min(start, p.steps), p.steps))
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(resumed, whole[start:], strict=True))


def test_counts_and_bounds_formulas():
    p = ShardPlan(1281167, 32, 7, 8, 0, True)  # ImageNet train, global batch 256 on 8 ranks
    assert (p.global_batch, p.steps, p.num_samples, p.bounds) == (256, 5004, 5004 * 32, (0, 1281167))
    v = ShardPlan(50000, 25, 7, 8, 0, False)  # ImageNet val: 6250 per rank
    assert (v.bounds, v.num_samples, v.steps) == ((43750, 50000), 6250, 250)
    assert [ShardPlan(10, 3, r, 3, 0, False).bounds for r in range(3)] == [(0, 3), (3, 6), (6, 10)]
    assert ShardPlan(5, 4, 0, 2, 0, True).steps == 0 and list(ShardPlan(5, 4, 0, 2, 0, True).batches(0)) == []


def test_impossible_plans_are_refused():
    for args in ((10, 0, 0, 1), (10, 4, 2, 2), (10, 4, -1, 2), (-1, 4, 0, 1)):
        with pytest.raises(ValueError, match="no plan"):
            ShardPlan(*args, 0, True)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("world,unit", [(1, 1), (1, 4), (2, 2), (2, 8), (4, 4)])
@pytest.mark.parametrize("batch", [2, 4])
def test_kept_last_batch_is_one_more_step_of_equal_shares(size, world, unit, batch):
    """data.keep_last_batch: the remainder after the full steps is one more step, rounded down to a multiple
    of the unit (whole BN groups), an equal share per rank; the full steps are what dropping gives."""
    ranks = [ShardPlan(size, batch, r, world, 3, True, unit) for r in range(world)]
    g = batch * world
    kept = size % g - size % g % unit
    assert {p.last_share for p in ranks} == {kept // world}
    assert {p.steps for p in ranks} == {size // g + (kept > 0)}
    dropping = plans(size, batch, world, train=True, seed=3)
    served = [p.indices(epoch=2)[0].tolist() for p in ranks]
    for p, d, s in zip(ranks, dropping, served, strict=True):
        assert s[:d.num_samples] == d.indices(epoch=2)[0].tolist()  # the full steps unchanged
        parts = [b.tolist() for _, b in p.batches(epoch=2)]
        assert [len(b) for b in parts] == [batch] * (size // g) + ([kept // world] if kept else [])
        assert p.num_samples == len(s)
    seen = sum(served, [])
    perm = epoch_permutation(size, 3, 2).tolist()
    assert sorted(seen) == sorted(perm[:(size // g) * g + kept])  # the order's head, each sample once


def test_the_cifar_recipes_epoch_is_the_official_loaders():
    """fb.resnet.torch's dataloader.lua: ceil(50000 / 128) = 391 batches, the last of 80 images; our last step
    holds the same 80 positions whether 1 or 8 processes share it (BN groups: 8 of 10, unit 128 / 16)."""
    one = ShardPlan(50_000, 128, 0, 1, 0, True, 8)
    assert (one.steps, one.last_share) == (391, 80)
    last = one.positions(390)
    eight = [ShardPlan(50_000, 16, r, 8, 0, True, 8) for r in range(8)]
    assert {p.steps for p in eight} == {391} and {p.last_share for p in eight} == {10}
    assert torch.equal(torch.cat([p.positions(390) for p in eight]), last)
    assert last.tolist() == list(range(390 * 128, 50_000))
    assert ShardPlan(50_000, 128, 0, 1, 0, True, 0).steps == 390  # dropping: the paper text's 390


def test_a_last_unit_that_is_not_a_multiple_of_the_ranks_is_refused():
    with pytest.raises(ValueError, match="last_unit=3 is not a multiple of the 2 ranks"):
        ShardPlan(10, 2, 0, 2, 0, True, 3)


def test_repeated_augmentation_deals_copies_as_torchvisions_ra_sampler():
    """data.repeated_aug=4 on 8 groups of 16 (torchvision's V2 recipe: --ra-reps 4 over 8 GPUs): rank r of 8
    serves L[r::8] in order, L the permutation with each sample written 4 times (RASampler's rule); so each
    step holds 32 distinct images 4 times each, every copy in another group; the epoch keeps its length
    (size / 4 distinct images); 1 or 2 processes serve the same global batches; positions still seed the
    augmentation (the copies are augmented differently)."""
    size, seed, epoch = 1000, 3, 2
    ranks = [ShardPlan(size, 16, r, 8, seed, True, repeats=4, spread=8) for r in range(8)]
    perm = ShardPlan(size, 16, 0, 8, seed, True).order(epoch)  # the plain order: the same permutation
    dealt = perm.repeat_interleave(4)
    for r, p in enumerate(ranks):
        idx, pos = p.indices(epoch)
        assert torch.equal(idx, dealt[r::8][:len(idx)]), r
    steps = torch.stack([p.indices(epoch)[0].view(-1, 16) for p in ranks], dim=1)  # (step, group, image)
    assert steps.shape == (7, 8, 16)
    for step in steps:
        ids, counts = step.flatten().unique(return_counts=True)
        assert len(ids) == 32 and bool((counts == 4).all())
        for i in ids:  # the 4 copies in 4 different groups
            assert int((step == i).any(dim=1).sum()) == 4
    one = ShardPlan(size, 128, 0, 1, seed, True, repeats=4, spread=8).indices(epoch)
    two = [ShardPlan(size, 64, r, 2, seed, True, repeats=4, spread=8).indices(epoch) for r in range(2)]
    glued = torch.stack([t[0].view(-1, 64) for t in two], dim=1).flatten()
    assert torch.equal(glued, one[0])
    assert len(set(one[1].tolist())) == len(one[1])  # one position (one augmentation seed) per copy
    with pytest.raises(ValueError, match="no repeated order"):
        ShardPlan(size, 12, 0, 1, seed, True, repeats=4, spread=8)


def test_repeated_augmentation_is_a_config_key_with_a_one_line_refusal():
    from resnext.compose import compose_config
    from resnext.config import validate
    from resnext.errors import ConfigError
    from resnext.plan import RunPlan

    cfg = compose_config(["+recipe=resnext50_32x4d_tv_v2"])
    assert cfg.data.repeated_aug == 4 and RunPlan.of(cfg, 8).repeat_groups == 8  # 1024 in BN groups of 128
    assert RunPlan.of(cfg, 2).repeat_groups == 8  # the groups, not the processes: the same order on 2 GPUs
    assert RunPlan.of(compose_config(["+recipe=resnext50_32x4d_imagenet"]), 8).repeat_groups == 1
    with pytest.raises(ConfigError, match=r"^data.repeated_aug=0 must be >= 1"):
        validate(compose_config(["+recipe=resnext29_demo_digits", "data.repeated_aug=0"]))


def test_a_run_with_repeated_augmentation_serves_each_image_in_several_groups(tmp_path):
    """The run's loaders get the repeated order: the session's placement carries data.repeated_aug and the
    step's BN groups to the loader's ShardPlan (digits, in-memory; every loader reads ShardPlan.of)."""

    from resnext.compose import compose_config
    from resnext.data import build_loaders
    from resnext.engine.dist import init_world
    from resnext.engine.precision import Precision
    from resnext.plan import RunPlan
    from resnext.session import placement

    cfg = compose_config(["+recipe=resnext29_demo_digits", "data.repeated_aug=2", "model.bn_batch=8",
                          "data.batch_size=32"])
    plan = RunPlan.of(cfg, 1)
    assert plan.repeat_groups == 4
    train = build_loaders(cfg.data, placement(cfg, init_world("cpu"), Precision("fp32", "cpu", False), plan)).train
    first = train.plan.indices(0)[0][:32].view(4, 8)  # step 0 in its 4 BN groups
    ids, counts = first.unique(return_counts=True)
    assert len(ids) == 16 and bool((counts == 2).all())
    assert all(int((first == i).any(dim=1).sum()) == 2 for i in ids)


@pytest.mark.parametrize("data", [["data=synthetic", "data.synthetic_train=24", "data.synthetic_val=12"],
                                  ["+recipe=resnext29_demo_digits"],
                                  ["data.backend=torch", "data.workers=0", "data.prescan=false", "data.image_size=16",
                                   "data.val_resize=16", "data.val_crop=16"]])
def test_every_data_builder_batches_as_the_placement_says(data, tmp_path):
    """The loaders take this rank's batch sizes from the placement (the session fills it from RunPlan) and
    compute no split of their own: given 3 training and 5 evaluation images per batch while the config says
    8 and 0, each builder (synthetic, in-memory, JPEG folder) delivers 3 and 5."""
    import torch

    from resnext.compose import compose_config
    from resnext.data import Placement, build_loaders
    from resnext.data.tools import make_fake

    make_fake(tmp_path, 2, 6, 3, (32, 24))
    cfg = compose_config([*data, f"data.root={tmp_path}", "data.batch_size=8", "data.eval_batch_size=0"])
    loaders = build_loaders(cfg.data, Placement(0, 1, torch.device("cpu"), torch.float32, False, 0, 3, 5), 2)
    assert (next(iter(loaders.train))[1].numel(), next(iter(loaders.val))[1].numel()) == (3, 5)
