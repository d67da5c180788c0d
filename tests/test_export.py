"""A trained run out of vitlab: a timm folder that timm builds with vitlab's logits, an ONNX file
that onnxruntime runs with them, a hub folder with its model card; what cannot go is refused."""

from __future__ import annotations

import json

import pytest
import torch
from exportable import make_run
from omegaconf import OmegaConf

from vitlab.errors import ConfigError
from vitlab.runs.export import export
from vitlab.runs.export.__main__ import main
from vitlab.runs.export.onnx import check_onnx
from vitlab.runs.export.timm import load_timm
from vitlab.runs.trained import load_trained

CLASSES = [f"digit {i}" for i in range(10)]


def assert_timm_logits(run, folder):
    trained = load_trained(run)
    images = torch.randn(5, trained.in_chans, *trained.img_size)
    with torch.no_grad():
        expected, got = trained.model(images), load_timm(folder)(images)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert expected.std() > 0.1  # logits far from zero, so the tolerance means something


@pytest.mark.parametrize("overrides", [[], ["model.pool=mean"], ["model.distill_token=true"]],
                         ids=["cls", "mean", "distilled"])
def test_timm_builds_the_exported_folder_with_vitlabs_logits(tmp_path, overrides):
    run = make_run(tmp_path / "run", overrides, CLASSES)
    folder = export(run, "timm", tmp_path / "timm")
    config = json.loads((folder / "config.json").read_text())
    assert config["label_names"] == CLASSES and config["pretrained_cfg"]["input_size"] == [1, 32, 32]
    assert_timm_logits(run, folder)


def test_a_cnn_baseline_is_timms_own_model(tmp_path):
    run = make_run(tmp_path / "run", ["model=cnn", "model.backbone=resnet10t"], CLASSES)
    folder = export(run, "timm", tmp_path / "timm")
    assert json.loads((folder / "config.json").read_text())["architecture"] == "resnet10t"
    assert_timm_logits(run, folder)


@pytest.mark.slow
def test_the_r50_hybrid_exports_to_timms_hybrid(tmp_path):
    run = make_run(tmp_path / "run", ["model=vit_hybrid_r50_b16", "model.depth=1",
                                          "model.embed_dim=64", "model.num_heads=2"])
    folder = export(run, "timm", tmp_path / "timm")
    assert json.loads((folder / "config.json").read_text())["architecture"] == "vit_base_r50_s16_224"
    assert_timm_logits(run, folder)


@pytest.mark.parametrize("overrides,reason", [
    (["model/pos_embed=rope_2d"], "positional variant Rope2d"),
    (["+model/embed=spt"], "embed ShiftedPatchEmbed"),
    (["model=vit_hybrid"], r"embed HybridEmbed \(resnet18\)"),
    (["model.pool=seqpool"], "pool=seqpool"),
    (["model=mlp"], "vitlab.models.mlp.MLP: timm has no such classifier"),
])
def test_what_timm_cannot_build_is_refused_before_a_file_is_written(tmp_path, overrides, reason):
    run = make_run(tmp_path / "run", overrides)
    with pytest.raises(ConfigError, match=f"cannot export to timm: {reason}"):
        export(run, "timm", tmp_path / "timm")
    assert not (tmp_path / "timm").exists()


ONNX_CASES = {
    "learned_1d": [],
    "rope_2d": ["model/pos_embed=rope_2d"],
    "relative_bias": pytest.param(["model/pos_embed=relative_bias"], marks=pytest.mark.slow),
    "relative": pytest.param(["model/pos_embed=relative"], marks=pytest.mark.slow),
    "learned_2d": pytest.param(["model/pos_embed=learned_2d"], marks=pytest.mark.slow),
    "sincos_2d": pytest.param(["model/pos_embed=sincos_2d"], marks=pytest.mark.slow),
    "none_mean": pytest.param(["model/pos_embed=none", "model.pool=mean"], marks=pytest.mark.slow),
    "hybrid": pytest.param(["model=vit_hybrid"], marks=pytest.mark.slow),
    "spt_lsa": pytest.param(["+model/embed=spt", "+model/attention=lsa"], marks=pytest.mark.slow),
    "gpsa": pytest.param(["+model/attention=gpsa", "model.attention.local_blocks=2"],
                         marks=pytest.mark.slow),
    "cct": pytest.param(["model=cct_7_3x1"], marks=pytest.mark.slow),
}


@pytest.mark.parametrize("overrides", ONNX_CASES.values(), ids=ONNX_CASES.keys())
def test_onnx_runs_in_onnxruntime_with_pytorchs_logits_at_any_batch_size(tmp_path, overrides):
    run = make_run(tmp_path / "run", overrides, CLASSES)
    path = export(run, "onnx", tmp_path / "onnx")
    assert check_onnx(load_trained(run), path) < 1e-4  # at batch 3; exported at batch 2
    assert json.loads((path.parent / "preprocess.json").read_text())["label_names"] == CLASSES


def test_the_hub_folder_has_timms_files_and_a_model_card(tmp_path):
    run = make_run(tmp_path / "run", ["module.optimizer.lr=0.002"], CLASSES)
    folder = export(run, "hub", tmp_path / "hub", license="mit")
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlicense: mit\nlibrary_name: timm\n")
    assert "| test accuracy | 50.00 % |" in card and "python src/train.py module.optimizer.lr=0.002" in card
    assert {p.name for p in folder.iterdir()} == {"README.md", "config.json", "model.safetensors"}
    # named by preset and run, the data by what it is, and no link the user did not give
    assert "\n# vit_micro, run run\n" in card and "http" not in card and "${" not in card
    assert "| data | scikit-learn's handwritten digits (8x8, upsampled) (10 classes) |" in card


def test_a_sweep_jobs_card_names_its_sweep_and_links_only_what_is_given(tmp_path):
    run = make_run(tmp_path / "2026-12-05_10-00-00" / "5", [], CLASSES)
    card = (export(run, "hub", tmp_path / "hub", link="https://example.org/lab") / "README.md").read_text()
    assert "\n# vit_micro, run 2026-12-05_10-00-00/5\n" in card
    assert "[vitlab](https://example.org/lab)" in card and card.count("http") == 1


def test_a_pretraining_run_is_refused_with_the_way_forward(tmp_path):
    run = make_run(tmp_path / "run", [])
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    cfg.module._target_ = "vitlab.objectives.mae_module.MaskedAutoencoderModule"
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    with pytest.raises(ConfigError, match="no trained classifier .* fine-tune it first"):
        export(run, "onnx", tmp_path / "onnx")


def test_the_command_line_refuses_in_one_line(tmp_path, capsys):
    run = make_run(tmp_path / "run", ["model/pos_embed=sincos_2d"])
    with pytest.raises(SystemExit) as exit:
        main([str(run), "--to", "timm"])
    assert exit.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {run}: cannot export to timm: positional variant SinCos2d: timm's VisionTransformer "
        "has learned 1-D positions only (export --to onnx works)"]
