"""eval.py on an MAE pre-training run folder: the reconstruction loss of its test split under
the fixed evaluation masks, and one line saying so (a classifier's accuracy otherwise)."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict
from test_mae_finetune import mae_run_folder

from vitlab.objectives.mae_module import eval_noise
from vitlab.training.evaluate import evaluate, headline


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
    with torch.no_grad():  # the saved weights, each test image masked by its own fixed noise
        losses = [(module.model(x, eval_noise(x, module.model.num_patches))[0], len(x))
                  for x, _ in data.test_dataloader()]
    expected = sum(loss * n for loss, n in losses) / sum(n for _, n in losses)
    assert metrics["test/loss"] == pytest.approx(float(expected), rel=1e-5)
    assert headline(metrics, "test") == f"test reconstruction loss: {metrics['test/loss']:.4f}"
    assert headline({"val/acc": 0.5, "val/loss": 1.0}, "val") == "val accuracy: 0.5000"


def test_an_images_evaluation_mask_is_its_own_in_any_batch_and_position():
    """Keyed by the pixels, not the batch: the same image, alone or at another place in another
    batch, gets the same noise; different images get different, uniform noise."""
    torch.manual_seed(0)
    x = torch.randn(256, 3, 16, 16)
    noise = eval_noise(x, 16)
    assert noise.shape == (256, 16) and 0 <= noise.min() and noise.max() < 1
    assert torch.equal(eval_noise(torch.cat([x[200:201], x[:3]]), 16), noise[[200, 0, 1, 2]])
    assert abs(noise.mean().item() - 0.5) < 0.01 and abs(noise.std().item() - 12 ** -0.5) < 0.01
    kept = noise.argsort(1)[:, :4]  # mask ratio 0.75: every patch position kept about as often
    counts = torch.bincount(kept.flatten(), minlength=16)
    assert counts.min() > 40 and counts.max() < 90  # 64 each on average
    assert len({tuple(sorted(k.tolist())) for k in kept}) > 200


@pytest.mark.slow
def test_an_mae_runs_test_loss_is_the_same_on_1_2_and_3_processes(tmp_path):
    """113 test images (divisible by neither 2 nor 3), batches of 30: each image keeps its mask
    wherever the ranks' shares put it, so the loss differs by float summation order only (with
    batch-keyed masks it moved by ~1e-3)."""
    from conftest import run_entry

    from vitlab.runs.summary import read_summary

    overrides = ["model.depth=1", "data.batch_size=30", "+data.dataset.test_fraction=0.0628"]
    run, _ = mae_run_folder(tmp_path / "mae", overrides)
    saved = compose_config(["experiment=mae_pretrain", *overrides])
    with open_dict(saved):
        saved.tags = []
    (run / ".hydra").mkdir()
    OmegaConf.save(saved, run / ".hydra" / "config.yaml")
    losses = []
    for n in (1, 2, 3):
        out = tmp_path / f"eval_{n}"
        args = [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "trainer.accelerator=cpu",
                f"trainer.devices={n}", f"hydra.run.dir={out}"]
        result = run_entry("eval.py", args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        summary = read_summary(out)
        assert summary["world_size"] == n
        losses.append(summary["test"]["test/loss"])
    assert losses == pytest.approx([losses[0]] * 3, rel=1e-6, abs=0)
