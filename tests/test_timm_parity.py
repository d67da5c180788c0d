"""learned_1d with class-token pooling is timm's VisionTransformer, and relative_bias is timm's
VisionTransformerRelPos (bias tables, no LayerScale), weight for weight."""

from __future__ import annotations

import functools

import pytest
import timm
import torch
from conftest import compose_config
from timm.models.vision_transformer import VisionTransformer as TimmViT
from timm.models.vision_transformer_relpos import VisionTransformerRelPos

from vitlab.models import VisionTransformer
from vitlab.models.pos_embed import RelativeBias
from vitlab.models.timm_convert import from_timm_relpos_state_dict, from_timm_state_dict
from vitlab.runs.build_model import build_model

SIZES = {  # name: (timm model, our constructor arguments)
    "vit_tiny_patch16_224": (
        lambda: timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10),
        dict(img_size=224, patch_size=16, embed_dim=192, depth=12, num_heads=3),
    ),
    "custom_32px": (
        lambda: TimmViT(img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=4,
                        num_classes=10),
        dict(img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=4),
    ),
}


@pytest.mark.parametrize("name", SIZES)
def test_converted_timm_weights_give_the_same_logits(name):
    make_timm, ours = SIZES[name]
    torch.manual_seed(0)
    reference = make_timm().eval()
    for name, p in reference.named_parameters():  # timm zero-initialises the head and biases
        if "norm" not in name:
            torch.nn.init.normal_(p, std=0.1)
    model = VisionTransformer(num_classes=10, pool="cls", **ours).eval()
    model.load_state_dict(from_timm_state_dict(reference.state_dict()))  # strict: every key
    images = torch.randn(2, 3, ours["img_size"], ours["img_size"])
    with torch.no_grad():
        expected = reference(images)
        torch.testing.assert_close(model(images), expected, atol=1e-5, rtol=0)
    assert expected.std() > 0.1  # logits far from zero, so the tolerance means something


def test_converter_refuses_weights_of_a_different_network():
    reference = TimmViT(img_size=32, patch_size=4, embed_dim=64, depth=1, num_heads=4,
                        reg_tokens=2, init_values=1e-5)
    with pytest.raises(ValueError, match="reg_token"):
        from_timm_state_dict(reference.state_dict())


@pytest.mark.parametrize("preset,timm_name,count", [
    ("vit_tiny", "vit_tiny_patch16_224", 5_717_416),
    ("vit_small", "vit_small_patch16_224", 22_050_664),
    ("vit_base", "vit_base_patch16_224", 86_567_656),
])
def test_presets_have_timm_parameter_counts(preset, timm_name, count):
    cfg = compose_config([f"model={preset}", "data.num_classes=1000", "data.img_size=224",
                          "data.in_chans=3"])
    ours = sum(p.numel() for p in build_model(cfg.model).parameters())
    with torch.device("meta"):  # no memory or init time for the reference
        reference = timm.create_model(timm_name, pretrained=False)
    assert ours == sum(p.numel() for p in reference.parameters()) == count


RELPOS = {  # name: (image size, timm options); patch 4, D 64, 4 heads, depth 3
    "per_block_4x4_class_token": (16, dict(shared_rel_pos=False)),
    "shared_3x5_class_token": ((12, 20), dict(shared_rel_pos=True)),  # not square: rows/columns
    "per_block_4x4_mean_pool": (16, dict(class_token=False, global_pool="avg")),
}


def relpos_reference(img_size, **options):
    """timm's VisionTransformerRelPos as vitlab's relative_bias can reproduce it, with every
    weight random and far from zero (timm zero-initialises biases and the head)."""
    options = dict(class_token=True, global_pool="token") | options
    torch.manual_seed(0)
    reference = VisionTransformerRelPos(
        img_size=img_size, patch_size=4, embed_dim=64, depth=3, num_heads=4, num_classes=10,
        rel_pos_type="bias", init_values=None, **options).eval()
    for name, p in reference.named_parameters():
        if "norm" not in name:  # position tables as large as the content logits
            torch.nn.init.normal_(p, std=1.0 if "rel_pos" in name else 0.1)
    return reference


@pytest.mark.parametrize("name", RELPOS)
def test_converted_timm_relpos_weights_give_the_same_logits(name):
    img_size, options = RELPOS[name]
    reference = relpos_reference(img_size, **options)
    grid = tuple(reference.patch_embed.grid_size)
    class_token = reference.cls_token is not None
    tables = [p for n, p in reference.named_parameters() if "relative_position_bias" in n]
    assert len(tables) == (1 if options.get("shared_rel_pos") else 3)
    model = VisionTransformer(
        img_size=img_size, patch_size=4, embed_dim=64, depth=3, num_heads=4, num_classes=10,
        pool="cls" if class_token else "mean", pos_embed=functools.partial(
            RelativeBias, shared=options.get("shared_rel_pos", False),
            cls_entries=class_token)).eval()
    model.load_state_dict(from_timm_relpos_state_dict(reference.state_dict(), grid))  # strict
    images = torch.randn(2, 3, *((img_size,) * 2 if isinstance(img_size, int) else img_size))
    with torch.no_grad():
        expected = reference(images)
        torch.testing.assert_close(model(images), expected, atol=1e-5, rtol=0)
        # the tables matter: the same weights with other position biases give other logits
        for t in tables:
            t.copy_(t.roll(1, dims=0))
        assert (reference(images) - expected).abs().max() > 1e-2
    assert expected.std() > 0.1  # logits far from zero, so the tolerance means something


@pytest.mark.parametrize("options,message", [
    (dict(init_values=1e-5), "ls1.gamma"),  # LayerScale
    (dict(fc_norm=True), "fc_norm"),
    (dict(qk_norm=True), "q_norm"),
    (dict(rel_pos_type="mlp"), "rel_pos_type='bias'"),  # an MLP of log coordinates, no table
])
def test_relpos_converter_refuses_weights_of_a_different_network(options, message):
    reference = VisionTransformerRelPos(
        img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2, class_token=True,
        global_pool="token", **(dict(rel_pos_type="bias", init_values=None) | options))
    with pytest.raises(ValueError, match=message):
        from_timm_relpos_state_dict(reference.state_dict())


def test_relpos_converter_needs_the_grid_of_a_non_square_table():
    reference = relpos_reference((12, 20))
    with pytest.raises(ValueError, match="grid"):
        from_timm_relpos_state_dict(reference.state_dict())
