"""Hybrid embedding: a timm CNN stage as the patch tokens; presets against timm's hybrids."""

from __future__ import annotations

import re
from functools import partial
from types import SimpleNamespace

import pytest
import timm
import torch
from conftest import compose_config, run_entry
from hydra.utils import instantiate
from safetensors.torch import save_file

from vitlab.errors import ConfigError
from vitlab.models import HybridEmbed, VisionTransformer
from vitlab.models import hybrid as hybrid_module
from vitlab.objectives.optim import param_groups
from vitlab.runs.build_model import build_model


def embed(**kw):
    args = dict(img_size=32, patch_size=1, in_chans=1, embed_dim=16, backbone="resnet18",
                out_index=2)
    return HybridEmbed(**(args | kw))


def hybrid_vit(**kw):
    return VisionTransformer(img_size=32, patch_size=1, in_chans=1, num_classes=10, embed_dim=32,
                             depth=1, num_heads=4, embed=partial(HybridEmbed, **kw))


@pytest.mark.parametrize("size, out_index, patch, grid", [
    (32, 2, 1, (4, 4)),      # stride 8
    (64, 2, 1, (8, 8)),
    (224, 2, 1, (28, 28)),
    (32, 1, 2, (4, 4)),      # stride 4, 2x2 patches of the 8x8 map
    ((48, 64), -1, 1, (2, 2)),  # stride 32, ceil for the odd 48 / 32
])
def test_grid_and_token_shapes_for_several_image_sizes(size, out_index, patch, grid):
    e = embed(img_size=size, out_index=out_index, patch_size=patch)
    H, W = (size, size) if isinstance(size, int) else size
    tokens, got = e(torch.randn(2, 1, H, W))
    assert e.grid == got == grid
    assert tokens.shape == (2, grid[0] * grid[1], 16)


def test_hybrid_vit_classifies_and_positions_cover_the_cnn_grid():
    model = hybrid_vit(backbone="resnet18", out_index=2)
    assert model(torch.randn(3, 1, 32, 32)).shape == (3, 10)
    assert model.pos_embed.weight.shape[1] == 4 * 4 + 1  # 16 CNN tokens + class token


def test_deeper_stages_are_not_built():
    assert not any(n.startswith("layer3") for n, _ in embed(out_index=2).backbone.named_modules())


@pytest.mark.parametrize("preset, reference, grid", [
    ("vit_hybrid_r50_b16", "vit_base_r50_s16_224", (14, 14)),  # 98,659,112, 196 tokens
    ("vit_hybrid_r26_s32", "vit_small_r26_s32_224", (7, 7)),  # 36,431,912
])
def test_paper_presets_match_timm_parameter_counts(preset, reference, grid):
    cfg = compose_config([f"model={preset}", "data=fake", "data.img_size=224", "data.in_chans=3",
                          "data.num_classes=1000"])
    model = build_model(cfg.model)
    count = sum(p.numel() for p in model.parameters())
    with torch.device("meta"):  # only counted: no memory, no initialisation
        timm_model = timm.create_model(reference, pretrained=False, num_classes=1000)
    expected = sum(p.numel() for p in timm_model.parameters())
    assert abs(count - expected) <= 0.005 * expected, (count, expected)
    assert model.embed.grid == grid


def test_frozen_stem_gets_no_gradient_and_keeps_its_norm_statistics():
    model = hybrid_vit(backbone="resnet18", out_index=2, freeze=True).train()
    stem = model.embed.backbone
    assert not stem.training and model.blocks.training  # BatchNorm stays in eval mode
    mean = stem.bn1.running_mean.clone()
    model(torch.randn(4, 1, 32, 32)).sum().backward()
    assert all(not p.requires_grad and p.grad is None for p in stem.parameters())
    assert torch.equal(stem.bn1.running_mean, mean)
    assert model.embed.proj.weight.grad is not None  # the projection still learns
    groups = param_groups(model, 0.05)
    assert not {id(p) for p in stem.parameters()} & {id(p) for g in groups for p in g["params"]}


def test_backbone_norms_are_not_decayed_and_the_stem_gets_its_own_lr():
    model = hybrid_vit(backbone="resnet18", out_index=2)
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = param_groups(model, 0.05)
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert {"embed.backbone.bn1.weight", "embed.backbone.bn1.bias",
            "embed.backbone.layer2.0.downsample.1.weight"} <= skipped
    assert "embed.backbone.conv1.weight" in {names[id(p)] for p in decay["params"]}

    groups = param_groups(model, 0.05, stem_lr_scale=0.1)
    stem = [g for g in groups if g.get("lr_scale") == 0.1]
    assert [g["weight_decay"] for g in stem] == [0.05, 0.0]
    assert "embed.backbone.bn1.weight" in {names[id(p)] for p in stem[1]["params"]}
    assert {names[id(p)] for g in stem for p in g["params"]} == {
        n for n in names.values() if n.startswith("embed.backbone.")}


def test_stem_lr_scale_scales_the_whole_schedule():
    cfg = compose_config(["model=vit_hybrid", "module.stem_lr_scale=0.1", "module.warmup_epochs=0",
                          "module.min_lr_ratio=0.01", "module.optimizer.lr=1e-3"])
    module = instantiate(cfg.module, model=build_model(cfg.model))
    object.__setattr__(module, "_trainer", SimpleNamespace(estimated_stepping_batches=10,
                                                           max_epochs=1))
    config = module.configure_optimizers()
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4])
    for _ in range(10):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-5, 1e-5, 1e-6, 1e-6])


@pytest.mark.parametrize("kw, message", [
    (dict(backbone="resnet19"), "model.embed.backbone='resnet19' is not a timm model; "
                                "close names: resnet18"),
    (dict(out_index=5), re.escape("model.embed.out_index=5 is not a stage of resnet18; it has "
                                  "0 (stride 2, 64 ch), 1 (stride 4, 64 ch), 2 (stride 8, 128 ch), "
                                  "3 (stride 16, 256 ch), 4 (stride 32, 512 ch)")),
    (dict(patch_size=8), "model.patch_size=8 is larger than the 4x4 feature map of resnet18 "
                         "stage 2 at 32x32 px"),
    (dict(patch_size=3), "model.patch_size=3 does not divide the 4x4 feature map .*; "
                         r"use one of \[1, 2, 4\]"),
    (dict(pretrained="missing.pth"), "model.embed.pretrained: no checkpoint file at /.*missing"),
])
def test_bad_input_is_one_clear_line(kw, message):
    with pytest.raises(ConfigError, match=message) as info:
        embed(**kw)
    assert "\n" not in str(info.value)


def test_pretrained_from_an_absent_cache_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(hybrid_module, "hf_cache_dir", lambda: str(tmp_path))
    with pytest.raises(ConfigError, match=f"timm/resnet18.a1_in1k.* not in the Hugging Face "
                                          f"cache {tmp_path}"):
        embed(pretrained=True)


def fake_weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.contiguous() for k, v in timm.create_model("resnet18").state_dict().items()}


def test_pretrained_from_a_local_checkpoint(tmp_path):
    weights = fake_weights()
    torch.save(weights, tmp_path / "r18.pth")
    e = embed(pretrained=str(tmp_path / "r18.pth"), in_chans=3)
    torch.testing.assert_close(e.backbone.layer2[0].conv1.weight, weights["layer2.0.conv1.weight"])


def test_pretrained_true_reads_an_existing_hugging_face_cache(tmp_path, monkeypatch):
    weights = fake_weights()
    snapshot = tmp_path / "models--timm--resnet18.a1_in1k" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    save_file(weights, snapshot / "model.safetensors")
    monkeypatch.setattr(hybrid_module, "hf_cache_dir", lambda: str(tmp_path))
    e = embed(pretrained=True)  # 1 channel: timm sums the RGB filters of the first conv
    torch.testing.assert_close(e.backbone.conv1.weight, weights["conv1.weight"].sum(1, True))
    torch.testing.assert_close(e.backbone.layer1[0].bn1.weight, weights["layer1.0.bn1.weight"])


def test_channels_last_gives_the_same_tokens():
    torch.manual_seed(0)
    plain = embed().eval()
    fast = embed(channels_last=True).eval()
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(2, 1, 32, 32)
    assert fast.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast(x)[0], plain(x)[0], atol=1e-5, rtol=1e-4)


def test_bad_backbone_stops_the_cli_before_training(tmp_path):
    result = run_entry("train.py", ["model=vit_hybrid", "model.embed.backbone=resnet19",
                                    f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 2  # raised inside Hydra's instantiate, printed as one line
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: model.embed.backbone='resnet19' is not a timm model"), result.stderr[-2000:]
    assert "Error in call to target" not in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


FAKE_224 = ["data=fake", "data.img_size=224", "data.in_chans=3", "data.batch_size=2"]


@pytest.mark.parametrize("preset, extra", [
    ("vit_hybrid", []),
    pytest.param("vit_hybrid_r50_b16", FAKE_224, marks=pytest.mark.slow),
    pytest.param("vit_hybrid_r26_s32", FAKE_224, marks=pytest.mark.slow),
])
def test_preset_fast_dev_run(preset, extra, tmp_path):
    result = run_entry("train.py", [f"model={preset}", *extra, "debug=fast",
                                    f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
