"""The from-scratch ViT: patch projection, attention, shapes, pooling, weight-decay groups."""

import functools

import pytest
import torch
import torch.nn.functional as F

from vitlab.models import PatchEmbed, VisionTransformer, patchify
from vitlab.models.layers import Attention
from vitlab.models.pos_embed import Learned2d, Relative, RelativeBias
from vitlab.objectives.optim import param_groups


def tiny(**kw):
    args = dict(img_size=32, patch_size=4, in_chans=3, num_classes=7, embed_dim=32, depth=2,
                num_heads=4, mlp_ratio=2)
    return VisionTransformer(**(args | kw))


def test_patch_embedding_is_the_linear_map_of_flattened_patches():
    torch.manual_seed(0)
    embed = PatchEmbed(img_size=32, patch_size=8, in_chans=3, embed_dim=16)
    images = torch.randn(2, 3, 32, 32)
    tokens, grid = embed(images)
    W = embed.proj.weight.reshape(16, -1)  # (D, P*P*C): the matrix W of e_n = W x_n + b
    expected = patchify(images, 8) @ W.T + embed.proj.bias
    assert grid == (4, 4) and tokens.shape == (2, 16, 16)
    torch.testing.assert_close(tokens, expected, rtol=1e-5, atol=1e-5)


def test_patchify_orders_patches_in_raster_order():
    images = torch.arange(16.0).reshape(1, 1, 4, 4)
    patches = patchify(images, 2)
    assert patches[0, 1].tolist() == [2.0, 3.0, 6.0, 7.0]  # second patch: top row, right half
    assert patches[0, 2].tolist() == [8.0, 9.0, 12.0, 13.0]


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_forward_shapes_and_class_token(pool):
    model = tiny(pool=pool).eval()
    out = model(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 7)
    assert (model.cls_token is not None) == (pool == "cls")
    assert model.pos_embed.weight.shape[1] == 64 + (pool == "cls")


def test_fused_attention_equals_explicit_softmax_attention():
    torch.manual_seed(0)
    attn = Attention(dim=32, num_heads=4).eval()
    x = torch.randn(2, 10, 32)
    q, k, v = attn.qkv(x).reshape(2, 10, 3, 4, 8).permute(2, 0, 3, 1, 4)
    weights = attn.attention_logits(x).softmax(-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 10, 32))
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)


def test_dropouts_and_stochastic_depth_act_only_in_training():
    model = tiny(drop_rate=0.3, attn_drop_rate=0.3, drop_path_rate=0.3)
    x = torch.randn(4, 3, 32, 32)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_stochastic_depth_grows_linearly_with_depth():
    model = tiny(depth=4, drop_path_rate=0.3)
    rates = [b.drop_path.p for b in model.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_weight_decay_skips_norms_biases_class_token_and_positions():
    model = tiny()
    decay, no_decay = param_groups(model, weight_decay=0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    skipped = {names[id(p)] for p in no_decay["params"]}
    decayed = {names[id(p)] for p in decay["params"]}
    assert {"cls_token", "pos_embed.weight", "norm.weight", "norm.bias",
            "blocks.0.attn.qkv.bias", "head.bias"} <= skipped
    assert {"blocks.0.attn.qkv.weight", "blocks.1.mlp.fc1.weight", "head.weight",
            "embed.proj.weight"} <= decayed
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert len(skipped) + len(decayed) == len(names)


@pytest.mark.parametrize("pos_embed", [
    functools.partial(Learned2d, where="every_layer"), functools.partial(Relative, cls_entries=True),
    functools.partial(RelativeBias, shared=True, cls_entries=True), RelativeBias])
def test_every_positional_parameter_is_exempt_from_weight_decay(pos_embed):
    model = tiny(pos_embed=pos_embed)
    _, no_decay = param_groups(model, weight_decay=0.05)
    positional = list(model.pos_embed.parameters())
    assert positional and all(p.ndim > 1 for p in positional)  # decayed by the ndim rule alone
    assert all(any(p is q for q in no_decay["params"]) for p in positional)


@pytest.mark.parametrize("kw, message", [
    (dict(patch_size=5), "patch size 5 does not divide"),
    (dict(embed_dim=30, num_heads=4), "num_heads=4 does not divide embed_dim=30; use one of"),
    (dict(pool="max"), "pool='max'"),
])
def test_bad_model_arguments_are_rejected(kw, message):
    with pytest.raises(ValueError, match=message):
        tiny(**kw)


def test_gradients_reach_every_parameter():
    model = tiny()
    F.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([1, 2])).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
