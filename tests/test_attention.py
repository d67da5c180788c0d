"""Attention rollout and mean attention distance: shapes and the properties that define them."""

import functools

import pytest
import torch

from vitlab.analysis.attention import (
    attention_rollout,
    mean_attention_distance,
    model_attention,
    plot_attention_distance,
    plot_rollout,
    rollout_map,
)
from vitlab.models import VisionTransformer
from vitlab.models.pos_embed import Relative, RelativeBias, Rope2d


def random_maps(depth=3, batch=2, heads=4, n=17):
    return [torch.rand(batch, heads, n, n).softmax(dim=-1) for _ in range(depth)]


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
def test_rollout_is_row_stochastic(fusion):
    rollout = attention_rollout(random_maps(), head_fusion=fusion)
    assert rollout.shape == (2, 17, 17)
    assert torch.all(rollout >= 0)
    torch.testing.assert_close(rollout.sum(dim=-1), torch.ones(2, 17))


def test_rollout_of_identity_attention_is_identity_and_order_matters():
    eye = torch.eye(5).expand(1, 2, 5, 5)
    torch.testing.assert_close(attention_rollout([eye, eye]), torch.eye(5)[None])
    a, b = random_maps(depth=2, batch=1, n=5)
    fa, fb = (0.5 * m.mean(1) + 0.5 * torch.eye(5) for m in (a, b))
    torch.testing.assert_close(attention_rollout([a, b]), fb @ fa)  # last block applied last


def test_mean_attention_distance_of_known_patterns():
    """A class token plus a 2x3 grid: attending only to oneself is distance 0; attending
    uniformly to the patches is the mean pairwise distance, in pixels."""
    n, grid = 7, (2, 3)
    to_self = torch.eye(n).expand(1, 1, n, n)
    uniform = torch.full((1, 1, n, n), 1 / n)
    dist = mean_attention_distance([to_self, uniform], grid, num_prefix=1, pixels_per_token=4)
    assert dist.shape == (2, 1)
    ys, xs = torch.meshgrid(torch.arange(2.0), torch.arange(3.0), indexing="ij")
    pts = torch.stack([ys.flatten(), xs.flatten()], -1)
    expected = torch.cdist(pts, pts).mean() * 4
    assert dist[0, 0] == 0 and dist[1, 0] == pytest.approx(float(expected))


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_maps_of_a_model(pool):
    model = VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=3, embed_dim=32,
                              depth=2, num_heads=2, pool=pool)
    images = torch.randn(3, 1, 16, 16)
    maps, grid, pixels = model_attention(model, images)
    assert model.training  # restored
    assert len(maps) == 2 and maps[0].shape == (3, 2, 16 + model.num_prefix, 16 + model.num_prefix)
    heat = rollout_map(maps, grid, model.num_prefix)
    assert heat.shape == (3, 4, 4) and torch.allclose(heat.amax(dim=(1, 2)), torch.ones(3))
    dist = mean_attention_distance(maps, grid, model.num_prefix, pixels)
    assert dist.shape == (2, 2) and pixels == 4
    assert torch.all((dist >= 0) & (dist <= 4 * 3 * 2**0.5))
    plot_rollout(images, heat, labels=torch.tensor([0, 1, 2]))
    plot_attention_distance(dist)


@pytest.mark.parametrize("pos_embed", [
    Relative, functools.partial(RelativeBias, cls_entries=True), Rope2d])
def test_maps_are_the_ones_the_forward_pass_uses(pos_embed):
    """Re-running every block with its map in place of its attention gives the model's features:
    each block's map is computed with that block's positions (own table per block)."""
    torch.manual_seed(0)
    model = VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=3, embed_dim=32,
                              depth=3, num_heads=2, pos_embed=pos_embed).eval()
    for p in model.pos_embed.parameters():  # tables that differ clearly between blocks
        torch.nn.init.normal_(p, std=1.0)
    images = torch.randn(2, 1, 16, 16)
    maps = model.attention_maps(images)
    with torch.no_grad():
        x, _ = model.tokens(images)
        for block, attention in zip(model.blocks, maps, strict=True):
            v = block.attn.qkv(block.norm1(x)).unflatten(-1, (3, 2, 16))[:, :, 2].transpose(1, 2)
            x = x + block.attn.proj((attention @ v).transpose(1, 2).flatten(2))
            x = x + block.mlp(block.norm2(x))
        torch.testing.assert_close(model.norm(x), model.forward_features(images))


def test_the_attention_figure_takes_images_of_every_class_of_a_class_ordered_split():
    """An image folder's validation split is in class order; its first batch would be one class.
    The figure and the distances are of images evenly spaced over the split."""
    from types import SimpleNamespace

    from torch.utils.data import DataLoader, Dataset

    from vitlab.callbacks.attention import AttentionMaps

    class Ordered(Dataset):  # 8 classes x 50 images, class by class
        def __len__(self):
            return 400

        def __getitem__(self, i):
            return torch.full((1, 4, 4), float(i)), i // 50

    loader = DataLoader(Ordered(), batch_size=64)
    trainer = SimpleNamespace(datamodule=SimpleNamespace(val_dataloader=lambda: loader))
    images, labels = AttentionMaps(max_images=16)._images(trainer)
    assert len(images) == len(labels) == 16
    assert sorted(set(labels.tolist())) == list(range(8))  # the first batch: class 0 and 1 only
    assert images[0, 0, 0, 0] == 0 and images[-1, 0, 0, 0] == 399  # first and last included
