"""learned_1d with class-token pooling is timm's VisionTransformer, weight for weight."""

from __future__ import annotations

import pytest
import timm
import torch
from conftest import compose_config
from hydra.utils import instantiate
from timm.models.vision_transformer import VisionTransformer as TimmViT

from vitlab.models import VisionTransformer
from vitlab.models.timm_convert import from_timm_state_dict

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
    ours = sum(p.numel() for p in instantiate(cfg.model).parameters())
    with torch.device("meta"):  # no memory or init time for the reference
        reference = timm.create_model(timm_name, pretrained=False)
    assert ours == sum(p.numel() for p in reference.parameters()) == count
