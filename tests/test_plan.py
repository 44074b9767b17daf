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
