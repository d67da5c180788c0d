"""DeiT's distillation token (model.distill_token): timm's VisionTransformerDistilled computed
exactly, from its module or from its file through model.pretrained, and a file refused by a model
without the token."""

import pytest
import timm
import torch
from conftest import compose_config
from safetensors.torch import save_file

from vitlab.errors import ConfigError
from vitlab.models.timm_convert import from_timm_state_dict
from vitlab.models.vit import VisionTransformer
from vitlab.runs.build_model import build_model

KW = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10)


def distilled_pair():
    torch.manual_seed(0)
    theirs = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, **KW).eval()
    ours = VisionTransformer(**KW, distill_token=True).eval()
    ours.load_state_dict(from_timm_state_dict(theirs.state_dict()))
    return ours, theirs


def test_distill_token_matches_timm_in_eval_and_training():
    ours, theirs = distilled_pair()
    x = torch.randn(2, 3, 32, 32)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)  # the heads' mean
    ours.train().set_distilled_training(True)
    theirs.train().set_distilled_training(True)
    for a, b in zip(ours(x), theirs(x), strict=True):  # both heads' logits while training
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def randomised_deit():
    """timm's VisionTransformerDistilled with every weight random and far from zero (timm
    zero-initialises biases and heads), at the size of conf/model/vit_micro.yaml's patches."""
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, **KW)
    for name, p in model.named_parameters():
        if "norm" not in name:
            torch.nn.init.normal_(p, std=0.1)
    return model.eval()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_deit_distilled_file_through_model_pretrained_gives_timms_logits(tmp_path, suffix):
    theirs = randomised_deit()
    path = tmp_path / f"deit{suffix}"
    state = {k: v.contiguous() for k, v in theirs.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    cfg = compose_config(["model=vit_micro", "model.distill_token=true", f"model.pretrained={path}",
                          "model.new_head=false", "model.embed_dim=48", "model.depth=2",
                          "model.num_heads=3", "model.mlp_ratio=4", "model.patch_size=8",
                          "data.img_size=32", "data.in_chans=3", "data.num_classes=10"])
    ours = build_model(cfg.model).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = theirs(x)
        torch.testing.assert_close(ours(x), want, atol=1e-5, rtol=0)
        ours.train().set_distilled_training(True)
        theirs.train().set_distilled_training(True)
        for a, b in zip(ours(x), theirs(x), strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert want.std() > 0.1  # logits far from zero, so the tolerance means something


def test_distilled_file_into_a_model_without_the_token_is_refused(tmp_path):
    path = tmp_path / "deit.pth"
    torch.save(randomised_deit().state_dict(), path)
    cfg = compose_config(["model=vit_micro", f"model.pretrained={path}", "model.embed_dim=48",
                          "model.depth=2", "model.num_heads=3", "model.patch_size=8",
                          "data.img_size=32", "data.in_chans=3", "data.num_classes=10"])
    with pytest.raises(ConfigError, match="set model.distill_token=true"):
        build_model(cfg.model)


POSITIONS = ["learned_1d", "learned_2d", "none", "relative", "relative_bias", "rope_2d", "sincos_2d"]


@pytest.mark.parametrize("pos_embed", POSITIONS)
def test_distill_token_works_with_every_positional_variant(pos_embed):
    cfg = compose_config(["model=vit_micro", "model.distill_token=true", f"model/pos_embed={pos_embed}",
                          "model.depth=2", "model.embed_dim=32"])
    model = build_model(cfg.model)
    assert model.num_prefix == 2 and model.head_dist.out_features == cfg.data.num_classes
    x = torch.randn(2, cfg.data.in_chans, cfg.data.img_size, cfg.data.img_size)
    model.train().set_distilled_training(True)
    cls, dist = model(x)
    (cls.sum() + dist.sum()).backward()
    assert model.dist_token.grad.abs().sum() > 0  # the token reaches the distillation head
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), (cls + dist).detach() / 2, atol=1e-5, rtol=0)
