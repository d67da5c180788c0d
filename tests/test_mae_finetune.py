"""Fine-tuning an MAE pre-training run: experiment=finetune_mae with model.pretrained=<its run
folder> takes the encoder (not the decoder), makes a new head, and decays lr layer by layer."""

from __future__ import annotations

from types import SimpleNamespace

import lightning
import pytest
import torch
from conftest import ROOT, compose_config, run_entry
from hydra.utils import instantiate

from vitlab.runs.build_model import build_model


def mae_run_folder(root, overrides=()):
    """A run folder as experiment=mae_pretrain leaves it: checkpoints/last.ckpt holding the
    LightningModule's state (model.encoder.*, model.decoder.*). Returns (folder, module)."""
    cfg = compose_config(["experiment=mae_pretrain", *overrides])
    module = instantiate(cfg.module, model=build_model(cfg.model, pretrained=False))
    (root / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": module.state_dict(), "pytorch-lightning_version": lightning.__version__},
               root / "checkpoints" / "last.ckpt")
    return root, module


def test_finetune_mae_loads_the_encoder_of_an_mae_run_and_decays_lr_by_layer(tmp_path):
    run, mae = mae_run_folder(tmp_path / "mae")
    cfg = compose_config(["experiment=finetune_mae", f"model.pretrained={run}"])
    assert cfg.module.layer_decay == 0.75 and cfg.model.drop_path_rate == 0.1
    model = build_model(cfg.model)
    encoder = mae.model.encoder.state_dict()
    state = model.state_dict()
    assert set(state) - set(encoder) == {"head.weight", "head.bias"}  # a new head, no decoder
    for key in encoder:
        assert torch.equal(state[key], encoder[key]), key
    assert model.head.out_features == cfg.data.num_classes
    module = instantiate(cfg.module, model=model)
    module.trainer = SimpleNamespace(estimated_stepping_batches=1000, max_epochs=cfg.trainer.max_epochs,
                                     num_training_batches=100, accumulate_grad_batches=1)
    opt = module.configure_optimizers()["optimizer"]
    scales = sorted({round(g["lr_scale"], 6) for g in opt.param_groups})
    depth = cfg.model.depth  # embeddings, each block, the head: depth + 2 layers
    assert isinstance(opt, torch.optim.AdamW)
    assert scales == sorted(round(0.75 ** k, 6) for k in range(depth + 2))


@pytest.mark.slow
def test_pretrain_then_finetune_through_the_cli(tmp_path):
    """A user's two commands: MAE pre-training for one epoch, then experiment=finetune_mae from
    its run folder; the fine-tuning log says the weights loaded."""
    fast = ["model.depth=1", "trainer.max_epochs=1", "trainer=cpu", "data.train_fraction=0.1",
            "trainer.enable_progress_bar=false", "callbacks.attention=null"]
    pre = run_entry("train.py", ["experiment=mae_pretrain", f"hydra.run.dir={tmp_path}/mae", *fast], ROOT)
    assert pre.returncode == 0, pre.stderr[-2000:]
    assert (tmp_path / "mae" / "checkpoints" / "last.ckpt").is_file()
    fine = run_entry("train.py", ["experiment=finetune_mae", f"model.pretrained={tmp_path}/mae",
                                  f"hydra.run.dir={tmp_path}/fine", "module.warmup_epochs=0", *fast], ROOT)
    assert fine.returncode == 0, fine.stderr[-2000:]
    assert "pretrained: loaded" in (tmp_path / "fine" / "train.log").read_text()


def test_linear_probe_of_an_mae_run_trains_the_head_alone_on_the_frozen_encoder(tmp_path):
    """The standard check of what MAE learned: model.pretrained=<MAE run> module.linear_probe=true."""
    run, mae = mae_run_folder(tmp_path / "mae")
    cfg = compose_config([f"model.pretrained={run}", "module.linear_probe=true"])
    module = instantiate(cfg.module, model=build_model(cfg.model))
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias"}
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    images, labels = torch.randn(8, 1, 32, 32), torch.arange(8)
    opt = torch.optim.AdamW(p for p in module.model.parameters() if p.requires_grad)
    torch.nn.functional.cross_entropy(module.model(images), labels).backward()
    opt.step()
    after = module.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"head.weight", "head.bias"}
    for key, value in mae.model.encoder.state_dict().items():  # the encoder is the MAE run's
        assert torch.equal(after[key], value), key


def test_the_cifar10_mae_recipe_fine_tunes_the_encoder_it_pre_trains():
    """experiment=cifar10_mae then experiment=cifar10_mae_finetune (GPU; unmeasured): the same
    encoder shape, images and statistics in both stages; MAE's module, then MAE's fine-tuning."""
    pre = compose_config(["experiment=cifar10_mae", "data.data_dir=cifar"])
    fine = compose_config(["experiment=cifar10_mae_finetune", "data.data_dir=cifar", "model.pretrained=run"])
    shape = ("_target_", "img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "pool")
    assert {k: pre.model[k] for k in shape} == {k: fine.model[k] for k in shape}
    assert pre.model.pos_embed == fine.model.pos_embed
    assert pre.data.mean == fine.data.mean and pre.data._target_ == fine.data._target_
    assert pre.module._target_ == "vitlab.objectives.mae_module.MaskedAutoencoderModule"
    assert pre.module.mae.mask_ratio == 0.75
    assert pre.callbacks.model_checkpoint.monitor == "val/loss" and pre.trainer.accelerator == "gpu"
    assert fine.module.layer_decay == 0.75 and fine.model.drop_path_rate == 0.1 and fine.data.mix
    assert pre.compile and fine.compile and fine.trainer.accelerator == "gpu"
