"""Keyed randomness (vitlab/data/keyed.py): orders and augmentations that depend on (seed,
epoch, image index) only, never on the rank, the worker or the step a run resumed at."""

import random

import torch
from torchvision.transforms import v2

from vitlab.data.keyed import KeyedSampler, KeyedTransform, rank_order


def test_ranks_take_consecutive_shares_of_the_global_batches_of_one_process():
    one = rank_order(45, 12, seed=1, epoch=3)
    two = [rank_order(45, 6, seed=1, epoch=3, rank=r, world_size=2) for r in range(2)]
    assert sorted(one.tolist()) == list(range(45)) and not torch.equal(one, rank_order(45, 12, 1, 4))
    for j in range(3):  # the whole global batches
        shares = [two[r][6 * j:6 * j + 6] for r in range(2)]
        assert torch.equal(torch.cat(shares), one[12 * j:12 * j + 12])
    assert torch.equal(torch.cat([two[0][18:], two[1][18:]]), one[36:])  # the last 9 shared 5 + 4
    assert [len(rank_order(45, 6, 1, 3, rank=r, world_size=2, drop_last=True)) for r in range(2)] == [18, 18]
    assert torch.equal(rank_order(5, 4, 0, 0, shuffle=False), torch.arange(5))


def test_a_resumed_sampler_skips_the_done_batches_of_its_epoch_only():
    full = KeyedSampler(20, batch=4, seed=2)
    full.set_epoch(1)
    resumed = KeyedSampler(20, batch=4, seed=2, start=(1, 3))
    resumed.set_epoch(1)
    assert list(resumed) == list(full)[12:] and all(e == 1 for _, e in resumed)
    assert list(resumed) == list(full)  # the next pass over it is a whole epoch again


def test_a_keyed_transform_ignores_and_keeps_the_global_generators():
    data = [(torch.arange(64, dtype=torch.uint8).view(1, 8, 8), 0)] * 4
    keyed = KeyedTransform(data, v2.RandomCrop(8, padding=3), seed=5)
    torch.manual_seed(0), random.seed(0)
    a = keyed[(2, 7)][0]
    expected_torch, expected_py = torch.rand(1), random.random()
    torch.manual_seed(123), random.seed(123)
    assert torch.equal(keyed[(2, 7)][0], a)  # whatever the worker's or rank's seed
    crops = {keyed[(i, 7)][0].sum().item() for i in range(4)}
    crops |= {keyed[(2, e)][0].sum().item() for e in range(8)}
    assert len(crops) > 3  # other images, other epochs: other crops
    torch.manual_seed(0), random.seed(0)
    keyed[(2, 7)]
    assert torch.equal(torch.rand(1), expected_torch) and random.random() == expected_py
