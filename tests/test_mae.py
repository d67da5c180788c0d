"""MAE (models/mae.py): masking, the encoder on a subset of patches, the loss, fine-tuning keys."""

from __future__ import annotations

import pytest
import torch
from test_pos_embed import KEYS, tiny

from vitlab.models.mae import MaskedAutoencoder, masked_patch_loss, random_masking


def test_random_masking_keeps_the_smallest_noise_and_restores_raster_order():
    noise = torch.rand(3, 16)
    keep, mask, ids_restore = random_masking(3, 16, 0.75, noise)
    assert keep.shape == (3, 4)
    assert torch.equal(keep.sort(1).values, noise.argsort(1)[:, :4].sort(1).values)
    assert mask.sum(1).tolist() == [12.0] * 3
    assert torch.all(mask.gather(1, keep) == 0)  # every kept patch is marked visible
    assert torch.equal(noise.argsort(1).gather(1, ids_restore), torch.arange(16).expand(3, -1))


@pytest.mark.parametrize("key", KEYS)
def test_encoder_on_all_patches_shuffled_equals_the_full_grid(key):
    """Through `keep`, every per-patch variant gives each patch the position of its own place:
    feeding all patches in a shuffled order permutes the output tokens and changes nothing else."""
    model = tiny(key).eval()
    x = torch.randn(2, 3, 16, 16)
    perm = torch.stack([torch.randperm(16) for _ in range(2)])
    with torch.no_grad():
        full = model.forward_features(x)
        shuffled = model.forward_features(x, perm)
    p = model.num_prefix
    assert torch.allclose(shuffled[:, :p], full[:, :p], atol=1e-5)
    assert torch.allclose(shuffled[:, p:], full[:, p:].gather(1, perm[..., None].expand(-1, -1, 32)),
                          atol=1e-5)


def test_loss_counts_removed_patches_only():
    pred, target = torch.zeros(1, 4, 3), torch.ones(1, 4, 3)
    pred[0, 0] = 1  # a perfect visible patch; the removed ones are all off by one
    mask = torch.tensor([[0.0, 1, 1, 1]])
    assert masked_patch_loss(pred, target, mask, False).item() == pytest.approx(1.0)
    pred[0, 1] = 1
    assert masked_patch_loss(pred, target, mask, False).item() == pytest.approx(2 / 3)


def test_mae_forward_and_backward():
    mae = MaskedAutoencoder(tiny("learned_1d"), decoder_dim=16, decoder_depth=1, decoder_heads=2)
    loss, pred, mask = mae(torch.randn(2, 3, 16, 16))
    assert pred.shape == (2, 16, 48) and mask.shape == (2, 16) and torch.isfinite(loss)
    loss.backward()
    assert mae.encoder.blocks[0].attn.qkv.weight.grad is not None
