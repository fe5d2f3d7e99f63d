"""LengthGroupedBatchSampler: the properties DDP relies on, for world sizes 1-4."""

from __future__ import annotations

import numpy as np
import pytest

from distrinews.dataset import LengthGroupedBatchSampler, sample_agnews_lengths
from distrinews.errors import DataError

LENGTHS = sample_agnews_lengths(1003, np.random.default_rng(0))  # 1003: prime, never divides
BATCH = 16


def epoch_batches(world, *, drop_last, epoch=0, seed=0, lengths=LENGTHS):
    per_rank = []
    for rank in range(world):
        s = LengthGroupedBatchSampler(
            lengths,
            BATCH,
            num_replicas=world,
            rank=rank,
            seed=seed,
            drop_last=drop_last,
            group_steps=4,
        )
        s.set_epoch(epoch)
        per_rank.append(list(s))
    return per_rank


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("drop_last", [True, False])
def test_every_rank_gets_the_same_number_of_full_batches(world, drop_last):
    per_rank = epoch_batches(world, drop_last=drop_last)
    steps = {len(b) for b in per_rank}
    assert len(steps) == 1 and steps.pop() > 0
    assert all(len(batch) == BATCH for b in per_rank for batch in b)
    assert len(per_rank[0]) == len(
        LengthGroupedBatchSampler(LENGTHS, BATCH, num_replicas=world, drop_last=drop_last)
    )


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_drop_last_batches_are_disjoint_across_ranks_and_steps(world):
    items = [i for b in epoch_batches(world, drop_last=True) for batch in b for i in batch]
    assert len(items) == len(set(items))
    assert len(LENGTHS) - len(items) < world * BATCH  # only the tail that cannot fill a step


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_full_coverage_without_drop_last(world):
    items = [i for b in epoch_batches(world, drop_last=False) for batch in b for i in batch]
    assert set(items) == set(range(len(LENGTHS)))
    # only the padding that fills the last step repeats
    assert len(items) - len(set(items)) == len(items) - len(LENGTHS) < world * BATCH


@pytest.mark.parametrize("world", [1, 2, 4])
def test_divisible_dataset_is_both_disjoint_and_complete(world):
    lengths = LENGTHS[: world * BATCH * 10]
    items = [
        i
        for b in epoch_batches(world, drop_last=False, lengths=lengths)
        for batch in b
        for i in batch
    ]
    assert sorted(items) == list(range(len(lengths)))


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_deterministic_per_seed_and_epoch(world):
    assert epoch_batches(world, drop_last=True) == epoch_batches(world, drop_last=True)
    assert epoch_batches(world, drop_last=True, epoch=1) != epoch_batches(world, drop_last=True)
    assert epoch_batches(world, drop_last=True, seed=1) != epoch_batches(world, drop_last=True)


def padding_waste(batches):
    """Share of a padded batch that is padding, over all batches."""
    real = sum(int(LENGTHS[b].sum()) for b in batches)
    padded = sum(int(LENGTHS[b].max()) * len(b) for b in batches)
    return 1 - real / padded


def test_batches_group_similar_lengths():
    batches = list(LengthGroupedBatchSampler(LENGTHS, BATCH, drop_last=True))  # default groups
    shuffled = np.random.default_rng(1).permutation(len(LENGTHS))
    random_batches = [shuffled[i : i + BATCH] for i in range(0, len(batches) * BATCH, BATCH)]
    assert padding_waste(batches) < padding_waste(random_batches) / 3


def test_ranks_of_one_step_get_similar_lengths():
    per_rank = epoch_batches(4, drop_last=True)
    steps = list(zip(*per_rank, strict=True))
    gap = np.median([np.ptp([LENGTHS[b].max() for b in step]) for step in steps])
    rng = np.random.default_rng(2)
    flat = [b for step in steps for b in step]
    shuffled = [flat[i] for i in rng.permutation(len(flat))]
    random_gap = np.median(
        [
            np.ptp([LENGTHS[b].max() for b in shuffled[i : i + 4]])
            for i in range(0, len(shuffled), 4)
        ]
    )
    assert gap < random_gap / 2


def test_no_shuffle_is_stable_order():
    s = LengthGroupedBatchSampler(LENGTHS, BATCH, shuffle=False, drop_last=True)
    assert list(s) == list(s)
    # without shuffling, each batch is a slice of a length-sorted chunk: non-increasing
    assert all(np.all(np.diff(LENGTHS[b]) <= 0) for b in s)


def test_too_small_dataset_is_a_clear_error():
    with pytest.raises(DataError, match="cannot fill one step"):  # the user's data: one line
        LengthGroupedBatchSampler(LENGTHS[:10], BATCH, num_replicas=2)
    with pytest.raises(ValueError, match=r"rank 2 is outside 0\.\.1"):
        LengthGroupedBatchSampler(LENGTHS, BATCH, num_replicas=2, rank=2)
