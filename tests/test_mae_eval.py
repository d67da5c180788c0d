"""eval.py on an MAE pre-training run folder: the reconstruction loss of its test split under
the fixed evaluation masks, and one line saying so (a classifier's accuracy otherwise)."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict
from test_mae_finetune import mae_run_folder

from vitlab.evaluate import evaluate, headline
from vitlab.mae_module import eval_noise


def test_eval_of_an_mae_run_is_its_reconstruction_loss_under_the_fixed_masks(tmp_path):
    overrides = ["model.depth=1", "data.batch_size=128"]
    run, module = mae_run_folder(tmp_path / "mae", overrides)
    saved = compose_config(["experiment=mae_pretrain", *overrides])
    with open_dict(saved):
        saved.tags = []  # Hydra's runtime choices exist only inside a Hydra run
    (run / ".hydra").mkdir()
    OmegaConf.save(saved, run / ".hydra" / "config.yaml")
    cfg = compose_config([f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "trainer.accelerator=cpu"],
                         config_name="eval", output_dir=tmp_path / "eval")
    metrics = evaluate(cfg)

    data = instantiate(saved.data)
    data.setup()
    module.eval()
    with torch.no_grad():  # the saved weights, test batch i masked by eval_noise(i)
        losses = [(module.model(x, eval_noise(len(x), module.model.num_patches, i, x.device))[0], len(x))
                  for i, (x, _) in enumerate(data.test_dataloader())]
    expected = sum(loss * n for loss, n in losses) / sum(n for _, n in losses)
    assert metrics["test/loss"] == pytest.approx(float(expected), rel=1e-5)
    assert headline(metrics, "test") == f"test reconstruction loss: {metrics['test/loss']:.4f}"
    assert headline({"val/acc": 0.5, "val/loss": 1.0}, "val") == "val accuracy: 0.5000"
