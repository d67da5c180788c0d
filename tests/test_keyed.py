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


def test_a_batch_of_keys_draws_what_its_keys_draw_one_at_a_time_and_plain_indices_still_draw_afresh():
    # the DataLoader fetches a batch through __getitems__, forking the generators once around it
    data = [(torch.arange(64, dtype=torch.uint8).view(1, 8, 8) + i, i) for i in range(6)]
    keyed = KeyedTransform(data, v2.Compose([v2.RandomCrop(8, padding=3), v2.RandomHorizontalFlip()]),
                           seed=5)
    keys = [(i, 3) for i in (4, 0, 5, 2)]
    torch.manual_seed(0), random.seed(0)
    batch = keyed.__getitems__(keys)
    after_torch, after_py = torch.rand(1), random.random()
    torch.manual_seed(0), random.seed(0)
    assert torch.equal(torch.rand(1), after_torch) and random.random() == after_py  # streams untouched
    for (image, label), key in zip(batch, keys, strict=True):
        one, one_label = keyed[key]
        assert torch.equal(image, one) and label == one_label == key[0]
    loader = torch.utils.data.DataLoader(keyed, batch_size=4, sampler=keys)
    assert torch.equal(next(iter(loader))[0], torch.stack([image for image, _ in batch]))
    # plain indices are transformed under the caller's streams, which move on from batch to
    # batch (forked and restored around each batch, every batch would repeat the first's crops)
    torch.manual_seed(1)
    plain = [tuple(img.sum().item() for img, _ in keyed.__getitems__([2, 2, 2, 2])) for _ in range(3)]
    assert len(set(plain)) == 3
