"""model.pretrained: every format gives timm's logits, adaptation equals timm's resampling,
layer-wise lr decay equals timm's groups, and a checkpoint that cannot fit is one clear line."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import CONF, ROOT, compose_config, run_entry
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from npz_layout import timm_to_npz
from omegaconf import OmegaConf
from safetensors.torch import save_file
from timm.layers import (
    GroupNormAct,
    StdConv2dSame,
    resample_abs_pos_embed,
    resample_patch_embed,
    resize_rel_pos_bias_table,
)
from timm.models import adapt_input_conv
from timm.models.vision_transformer import VisionTransformer as TimmViT
from timm.models.vision_transformer import _load_weights
from timm.models.vision_transformer_hybrid import _create_vision_transformer_hybrid, _resnetv2
from timm.models.vision_transformer_relpos import VisionTransformerRelPos
from timm.optim import param_groups_layer_decay as timm_layer_decay

from vitlab.errors import ConfigError
from vitlab.models import HybridEmbed, VisionTransformer
from vitlab.models.pos_embed import Learned2d, RelativeBias, SinCos2d
from vitlab.models.pos_embed.base import resample_grid_table
from vitlab.models.pretrained import load_pretrained
from vitlab.objectives.optim import freeze, layer_ids, param_groups_layer_decay
from vitlab.runs.build_model import build_model
from vitlab.runs.report import main as report_main

TINY = dict(embed_dim=64, depth=2, num_heads=4, num_classes=10)


def randomised(model):
    """Every weight random and far from zero (timm zero-initialises biases and the head)."""
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "norm" not in name:
            torch.nn.init.normal_(p, std=1.0 if "rel_pos" in name else 0.1)
    return model.eval()


def timm_vit(img_size=32, patch_size=4, **kw):
    return randomised(TimmViT(img_size=img_size, patch_size=patch_size, **(TINY | kw)))


def vitlab_vit(img_size=32, patch_size=4, **kw):
    return VisionTransformer(img_size=img_size, patch_size=patch_size, **(TINY | kw)).eval()


def r50_embed(layers):
    """vitlab's hybrid stem configured as conf/model/vit_hybrid_r50_b16.yaml, `layers` deep."""
    return functools.partial(HybridEmbed, backbone="resnetv2_50", backbone_kwargs=dict(
        layers=list(layers), preact=False, stem_type="same",
        conv_layer=functools.partial(StdConv2dSame, eps=1e-8),
        norm_layer=functools.partial(GroupNormAct, num_groups=32)))


def timm_r50_hybrid(layers, img_size=32, **kw):
    return randomised(_create_vision_transformer_hybrid(
        "vit_base_r50_s16_224", backbone=_resnetv2(tuple(layers)), pretrained=False,
        img_size=img_size, **(TINY | dict(depth=1) | kw)))


def assert_same_logits(reference, model, img_size=32, chans=3):
    images = torch.randn(2, chans, img_size, img_size)
    with torch.no_grad():
        expected = reference(images)
        torch.testing.assert_close(model(images), expected, atol=1e-5, rtol=0)
    assert expected.std() > 0.1  # logits far from zero, so the tolerance means something


def save(reference, path, wrap=None):
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({wrap: state} if wrap else state, path)
    return path


@pytest.mark.parametrize("name,wrap", [("w.pth", None), ("w.pth", "state_dict"), ("w.bin", "model"),
                                       ("w.safetensors", None)])
def test_timm_files_give_timm_logits(tmp_path, name, wrap):
    reference = timm_vit()
    model = load_pretrained(vitlab_vit(), save(reference, tmp_path / name, wrap), new_head=False)
    assert_same_logits(reference, model)


@pytest.mark.parametrize("big_vision", [False, True])
def test_paper_and_big_vision_npz_give_timm_logits(tmp_path, big_vision):
    # big_vision's table has no class slot: timm's no_embed_class (the class token unpositioned)
    reference = timm_vit(no_embed_class=big_vision)
    path = tmp_path / "w.npz"
    timm_to_npz(reference, path, big_vision=big_vision)
    again = TimmViT(img_size=32, patch_size=4, no_embed_class=big_vision, **TINY).eval()
    _load_weights(again, str(path))  # timm's own reader reads what the helper wrote
    assert_same_logits(reference, again)
    assert_same_logits(reference, load_pretrained(vitlab_vit(), path, new_head=False))


@pytest.mark.parametrize("suffix", [".npz", ".pth"])
def test_r50_hybrid_round_trip(tmp_path, suffix):
    """The paper's R50 hybrid (conv_root, block*/unit*) into vit_hybrid_r50_b16's stem, here
    one unit per stage to stay fast; the full (3, 4, 9) is the slow test below."""
    reference = timm_r50_hybrid((1, 1, 1))
    path = tmp_path / f"r50{suffix}"
    timm_to_npz(reference, path) if suffix == ".npz" else save(reference, path)
    model = VisionTransformer(img_size=32, patch_size=1, embed=r50_embed((1, 1, 1)),
                              **(TINY | dict(depth=1))).eval()
    assert_same_logits(reference, load_pretrained(model, path, new_head=False))


@pytest.mark.slow
def test_full_r50_hybrid_npz_into_the_preset(tmp_path):
    reference = timm_r50_hybrid((3, 4, 9), img_size=64, embed_dim=768, depth=1, num_heads=12)
    timm_to_npz(reference, tmp_path / "r50.npz")
    cfg = compose_config(["model=vit_hybrid_r50_b16", "data.img_size=64", "data.in_chans=3",
                          "model.depth=1", f"model.pretrained={tmp_path / 'r50.npz'}",
                          "model.new_head=false"])
    assert_same_logits(reference, build_model(cfg.model).eval(), img_size=64)


def test_timm_relpos_gives_timm_logits(tmp_path):
    reference = randomised(VisionTransformerRelPos(
        img_size=16, patch_size=4, rel_pos_type="bias", init_values=None, class_token=True,
        global_pool="token", **TINY))
    model = VisionTransformer(img_size=16, patch_size=4, **TINY, pos_embed=functools.partial(
        RelativeBias, cls_entries=True)).eval()
    load_pretrained(model, save(reference, tmp_path / "relpos.pth"), new_head=False)
    assert_same_logits(reference, model, img_size=16)


def test_relative_bias_tables_resized_as_timm(tmp_path):
    reference = randomised(VisionTransformerRelPos(
        img_size=16, patch_size=4, rel_pos_type="bias", init_values=None, class_token=True,
        global_pool="token", **TINY))  # grid 4x4 -> 6x3
    model = VisionTransformer(img_size=(24, 12), patch_size=4, **TINY, pos_embed=functools.partial(
        RelativeBias, cls_entries=True))
    load_pretrained(model, save(reference, tmp_path / "relpos.pth"))
    table = reference.blocks[1].attn.rel_pos.relative_position_bias_table.detach()
    expected = resize_rel_pos_bias_table(table, (6, 3), (11 * 5 + 3, 4))
    torch.testing.assert_close(model.pos_embed.weight[1].flatten(0, 1), expected[:55])
    torch.testing.assert_close(model.pos_embed.cls[1], expected[55:])


@pytest.mark.parametrize("fmt,interpolation,antialias", [
    (".pth", "bicubic", True), (".npz", "bilinear", False)])
@pytest.mark.parametrize("img_size", [48, (24, 40)])  # up, and a rectangular mix of down and up
def test_position_table_resampled_as_its_source(tmp_path, fmt, interpolation, antialias, img_size):
    reference = timm_vit()  # 8x8 grid
    path = tmp_path / f"w{fmt}"
    timm_to_npz(reference, path) if fmt == ".npz" else save(reference, path)
    model = load_pretrained(vitlab_vit(img_size=img_size), path)
    grid = model.embed.grid
    expected = resample_abs_pos_embed(reference.pos_embed.detach(), list(grid), (8, 8),
                                      interpolation=interpolation, antialias=antialias)
    torch.testing.assert_close(model.pos_embed.weight, expected)


@pytest.mark.parametrize("fmt,interpolation,antialias", [
    (".pth", "bicubic", True), (".npz", "bilinear", False)])
def test_patch_kernel_resampled_and_channels_adapted_as_timm(tmp_path, fmt, interpolation, antialias):
    reference = timm_vit()  # RGB, patch 4, 8x8 grid
    path = tmp_path / f"w{fmt}"
    timm_to_npz(reference, path) if fmt == ".npz" else save(reference, path)
    model = load_pretrained(vitlab_vit(patch_size=8, in_chans=1, num_classes=7), path)
    kernel = adapt_input_conv(1, reference.patch_embed.proj.weight.detach())
    expected = resample_patch_embed(kernel, [8, 8], interpolation=interpolation, antialias=antialias)
    torch.testing.assert_close(model.embed.proj.weight, expected)
    table = resample_abs_pos_embed(reference.pos_embed.detach(), [4, 4], (8, 8),
                                   interpolation=interpolation, antialias=antialias)
    torch.testing.assert_close(model.pos_embed.weight, table)
    assert model.head.weight.shape == (7, 64) and not model.head.weight.any()  # new, zero


def test_new_head_by_default_and_the_checkpoints_on_request(tmp_path, caplog):
    reference = timm_vit()
    path = save(reference, tmp_path / "w.pth")
    with caplog.at_level("INFO"):
        model = load_pretrained(vitlab_vit(), path)
    assert not model.head.weight.any() and not model.head.bias.any()
    assert sum("new zero-initialised head" in r.message for r in caplog.records) == 1
    kept = load_pretrained(vitlab_vit(), path, new_head=False)
    torch.testing.assert_close(kept.head.weight, reference.head.weight)


def lightning_ckpt(model, path):
    """What a vitlab run's checkpoint holds: the LightningModule's `model.` weights."""
    torch.save({"pytorch-lightning_version": "2", "hyper_parameters": {},
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


def test_vitlab_checkpoint_of_another_resolution_with_per_block_2d_tables(tmp_path):
    learned_2d = functools.partial(Learned2d, where="every_layer")
    source = randomised(vitlab_vit(pos_embed=learned_2d))
    path = lightning_ckpt(source, tmp_path / "best.ckpt")
    assert_same_logits(source, load_pretrained(vitlab_vit(pos_embed=learned_2d), path,
                                               new_head=False))
    larger = load_pretrained(vitlab_vit(img_size=(48, 24), pos_embed=learned_2d), path)
    # each block's row table 8 -> 12, column table 8 -> 6, as the variant resamples
    torch.testing.assert_close(larger.pos_embed.row, resample_grid_table(
        source.pos_embed.row.detach(), (8, 1), (12, 1)))
    torch.testing.assert_close(larger.pos_embed.col, resample_grid_table(
        source.pos_embed.col.detach(), (1, 8), (1, 6)))


def test_a_run_folder_loads_its_best_checkpoint(tmp_path):
    source = randomised(vitlab_vit())
    (tmp_path / "checkpoints").mkdir()
    best = lightning_ckpt(source, tmp_path / "checkpoints" / "epoch3.ckpt")
    lightning_ckpt(vitlab_vit(depth=1), tmp_path / "checkpoints" / "last.ckpt")
    (tmp_path / "summary.json").write_text(json.dumps({"best_checkpoint": str(best)}))
    # model.pretrained=<run folder>: build_model finds its checkpoint, models/ reads the file
    cfg = OmegaConf.create({"_target_": "vitlab.models.vit.VisionTransformer", "img_size": 32,
                            "patch_size": 4, **TINY, "pretrained": str(tmp_path), "new_head": False})
    assert_same_logits(source, build_model(cfg).eval())


@pytest.mark.parametrize("change,message", [
    (dict(embed_dim=96, num_heads=4), r"cls_token is \(1, 1, 64\) in the checkpoint, "
                                      r"\(1, 1, 96\) in the model"),
    (dict(depth=3), r"blocks.2.norm1.weight \(64,\) is not in the checkpoint"),
    (dict(depth=1), r"the checkpoint has blocks.1.norm1.weight \(64,\)"),
    (dict(mlp_ratio=2), r"blocks.0.mlp.fc1.weight is \(256, 64\) in the checkpoint, \(128, 64\)"),
    (dict(pos_embed=SinCos2d), r"pos_embed.weight \(1, 65, 64\), which the model lacks"),
    (dict(pool="mean"), r"pos_embed.weight is \(1, 65, 64\) in the checkpoint, \(1, 64, 64\)"),
])
def test_a_checkpoint_that_cannot_fit_names_the_first_key(tmp_path, change, message):
    path = save(timm_vit(), tmp_path / "w.pth")
    model = vitlab_vit(**change)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=message):
        load_pretrained(model, path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched


def test_heads_differ_only_in_the_split_of_the_width_is_refused(tmp_path):
    # same shapes everywhere: heads are not in the weights, so a 2-head model loads a 4-head
    # checkpoint and is a different network. timm's files do not record heads either; the
    # npz does, and says so.
    path = tmp_path / "w.npz"
    timm_to_npz(timm_vit(), path)
    with pytest.raises(ConfigError, match="num_heads"):
        load_pretrained(vitlab_vit(num_heads=2), path)


@pytest.mark.parametrize("name,message", [
    ("absent.pth", "no checkpoint file at"),
    ("w.onnx", "unknown format '.onnx'; use one of .npz"),
    ("garbage.pth", "cannot read it"),
])
def test_bad_files_are_one_line(tmp_path, name, message):
    path = tmp_path / name
    if name != "absent.pth":
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=message):
        load_pretrained(vitlab_vit(), path)


def test_cli_refuses_a_misfit_checkpoint_before_data_loads(tmp_path):
    path = save(timm_vit(embed_dim=32, num_heads=2), tmp_path / "w.pth")
    result = subprocess.run(
        [sys.executable, "src/train.py", f"model.pretrained={path}", f"hydra.run.dir={tmp_path}/run",
         "trainer=cpu", "debug=fast", "data=fake"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "does not fit the model: cls_token is (1, 1, 32) in the " \
        "checkpoint, (1, 1, 128) in the model" in errors[0]  # vit_micro is 128 wide
    assert not (tmp_path / "run" / "summary.json").exists()  # stopped before the run began


def test_layer_decay_groups_equal_timms(tmp_path):
    reference = timm_vit(depth=3)
    model = load_pretrained(vitlab_vit(depth=3), save(reference, tmp_path / "w.pth"))
    ours = param_groups_layer_decay(model, 0.05, 0.75)
    theirs = timm_layer_decay(reference, 0.05, list(reference.no_weight_decay()), layer_decay=0.75)
    names = {id(p): n for n, p in model.named_parameters()}
    timm_names = {id(p): n for n, p in reference.named_parameters()}
    rename = {"patch_embed.proj.": "embed.proj.", "pos_embed": "pos_embed.weight"}

    def as_ours(n):
        return next((new + n[len(old):] for old, new in rename.items() if n.startswith(old)), n)

    def summary(groups, lookup):
        return sorted((round(g["lr_scale"], 8), g["weight_decay"],
                       tuple(sorted(lookup(id(p)) for p in g["params"]))) for g in groups)
    assert summary(ours, names.get) == summary(theirs, lambda i: as_ours(timm_names[i]))
    ids, count = layer_ids(model)
    assert count == 5 and ids["embed.proj.weight"] == 0 and ids["blocks.2.mlp.fc1.weight"] == 3
    assert ids["norm.weight"] == 3 and ids["head.weight"] == 4  # timm: norm with the last block


def test_freezing_and_linear_probe():
    model = vitlab_vit(depth=3)
    freeze(model, layers=2)  # the embeddings and block 0
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "embed.proj.weight" not in trainable and "cls_token" not in trainable
    assert not any(n.startswith("blocks.0.") for n in trainable)
    assert "blocks.1.attn.qkv.weight" in trainable and "head.weight" in trainable
    probe = vitlab_vit()
    freeze(probe, linear_probe=True)
    assert {n for n, p in probe.named_parameters() if p.requires_grad} == {"head.weight", "head.bias"}


@pytest.mark.parametrize("experiment", ["finetune", "finetune_mae"])
def test_finetune_experiments_build_their_optimiser(experiment):
    cfg = compose_config([f"experiment={experiment}", "model.pretrained=unused.npz",
                          "module.freeze_layers=1"])
    module = instantiate(cfg.module, model=build_model(cfg.model, pretrained=False))
    assert not module.model.embed.proj.weight.requires_grad  # layer 0 frozen
    module.trainer = SimpleNamespace(estimated_stepping_batches=1000, max_epochs=cfg.trainer.max_epochs,
                                     num_training_batches=100, accumulate_grad_batches=1)
    opt = module.configure_optimizers()["optimizer"]
    if experiment == "finetune":  # the paper's SGD, one lr for every layer, no decay
        assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9
        assert {g["weight_decay"] for g in opt.param_groups} == {0.0}
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01 / 501] * 2)  # warm-up
    else:  # AdamW with layer decay: layer l of 6 (vit_micro: depth 4) at 0.75 ** (5 - l);
        assert isinstance(opt, torch.optim.AdamW)  # layer 0, the frozen embeddings, absent
        scales = sorted({round(g["lr_scale"], 6) for g in opt.param_groups})
        assert scales == sorted(round(0.75 ** k, 6) for k in range(5))


def hydra_job(overrides):
    """A job's config as the multirun composes it, with ${hydra:...} resolvable."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.mark.parametrize("init", ["pretrained", "scratch"])
@pytest.mark.parametrize("model", ["vit_micro", "vit_hybrid"])
def test_transfer_jobs_start_from_their_models_pretraining_or_scratch(init, model):
    try:
        cfg = hydra_job(["experiment=transfer", "transfer.pretrain_dir=study/pretrain",
                         f"model={model}", f"transfer.init={init}", "data.train_fraction=0.1"])
        assert dict(cfg.hydra.sweeper.params) == {
            "model": "vit_micro,vit_hybrid", "transfer.init": "pretrained,scratch",
            "data.train_fraction": "0.05,0.1,0.25,1.0", "seed": "0,1"}
        expected = f"study/pretrain/{model}" if init == "pretrained" else None
        assert cfg.model.pretrained == expected
        assert list(cfg.tags) == ["transfer", model, f"init={init}", "fraction=0.1"]
        pre = hydra_job(["experiment=transfer_pretrain", f"model={model}"])
        assert pre.hydra.sweep.subdir == model  # where stage 2 looks for it
        assert (pre.data.img_size, pre.data.num_classes) == (cfg.data.img_size, cfg.data.num_classes)
    finally:
        HydraConfig.instance().cfg = None


def tiny_image_folder(root, classes=10, per_class=6):
    from PIL import Image
    rng = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = torch.randint(0, 255, (32, 32, 3), generator=rng, dtype=torch.uint8)
                Image.fromarray(pixels.numpy()).save(folder / f"{i}.jpg")
    return root


@pytest.mark.slow
def test_transfer_study_chains_pretraining_into_finetuning_and_reports(tmp_path):
    data = tiny_image_folder(tmp_path / "rgb")
    study = tmp_path / "study"
    fast = ["model=vit_micro", "model.depth=1", "trainer.max_epochs=1", "trainer=cpu",
            "trainer.enable_progress_bar=false", "callbacks.attention=null"]
    pre = run_entry("train.py", ["experiment=transfer_pretrain", f"data.data_dir={data}",
                                 f"hydra.sweep.dir={study}/pretrain", *fast], ROOT)
    assert pre.returncode == 0, pre.stderr[-2000:]
    assert (study / "pretrain" / "vit_micro" / "checkpoints" / "last.ckpt").is_file()
    fine = run_entry("train.py", ["experiment=transfer", f"transfer.pretrain_dir={study}/pretrain",
                                  f"hydra.sweep.dir={study}/finetune", "seed=0",
                                  "data.train_fraction=0.25,1.0", *fast], ROOT)
    assert fine.returncode == 0, fine.stderr[-2000:]
    summaries = [json.loads(p.read_text()) for p in (study / "finetune").glob("*/summary.json")]
    assert len(summaries) == 4 and {s["status"] for s in summaries} == {"completed"}
    logs = {p.parent.name: p.read_text() for p in (study / "finetune").glob("*/train.log")}
    loaded = [name for name, log in logs.items() if "pretrained: loaded" in log]
    assert len(loaded) == 2  # the pretrained jobs (RGB -> 1-channel digits), not the scratch ones
    report_main([str(study / "finetune")])
    assert (study / "finetune" / "accuracy_vs_fraction.png").is_file()
    assert "transfer.init" in (study / "finetune" / "report.md").read_text()
