"""MAE (models/mae.py): masking, the encoder on a subset of patches, the loss, fine-tuning keys."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from test_pos_embed import KEYS, tiny

from vitlab.errors import ConfigError
from vitlab.models.mae import MaskedAutoencoder, hide_removed, masked_patch_loss, random_masking
from vitlab.models.spt import ShiftedPatchEmbed
from vitlab.models.vit import VisionTransformer


def test_random_masking_keeps_the_smallest_noise_and_restores_raster_order():
    noise = torch.rand(3, 16)
    keep, mask, ids_restore = random_masking(3, 16, 0.75, noise)
    assert keep.shape == (3, 4)
    assert torch.equal(keep.sort(1).values, noise.argsort(1)[:, :4].sort(1).values)
    assert mask.sum(1).tolist() == [12.0] * 3
    assert torch.all(mask.gather(1, keep) == 0)  # every kept patch is marked visible
    assert torch.equal(noise.argsort(1).gather(1, ids_restore), torch.arange(16).expand(3, -1))


@pytest.mark.parametrize("key", KEYS)
def test_encoder_on_all_patches_shuffled_equals_the_full_grid(key):
    """Through `keep`, every per-patch variant gives each patch the position of its own place:
    feeding all patches in a shuffled order permutes the output tokens and changes nothing else."""
    model = tiny(key).eval()
    x = torch.randn(2, 3, 16, 16)
    perm = torch.stack([torch.randperm(16) for _ in range(2)])
    with torch.no_grad():
        full = model.forward_features(x)
        shuffled = model.forward_features(x, perm)
    p = model.num_prefix
    assert torch.allclose(shuffled[:, :p], full[:, :p], atol=1e-5)
    assert torch.allclose(shuffled[:, p:], full[:, p:].gather(1, perm[..., None].expand(-1, -1, 32)),
                          atol=1e-5)


def test_loss_counts_removed_patches_only():
    pred, target = torch.zeros(1, 4, 3), torch.ones(1, 4, 3)
    pred[0, 0] = 1  # a perfect visible patch; the removed ones are all off by one
    mask = torch.tensor([[0.0, 1, 1, 1]])
    assert masked_patch_loss(pred, target, mask, False).item() == pytest.approx(1.0)
    pred[0, 1] = 1
    assert masked_patch_loss(pred, target, mask, False).item() == pytest.approx(2 / 3)


def test_mae_forward_and_backward():
    mae = MaskedAutoencoder(tiny("learned_1d"), decoder_dim=16, decoder_depth=1, decoder_heads=2)
    loss, pred, mask = mae(torch.randn(2, 3, 16, 16))
    assert pred.shape == (2, 16, 48) and mask.shape == (2, 16) and torch.isfinite(loss)
    loss.backward()
    assert mae.encoder.blocks[0].attn.qkv.weight.grad is not None


def spt_mae() -> MaskedAutoencoder:
    torch.manual_seed(0)
    encoder = VisionTransformer(img_size=16, patch_size=4, in_chans=3, num_classes=0, embed_dim=32,
                                depth=1, num_heads=2, embed=ShiftedPatchEmbed)
    return MaskedAutoencoder(encoder, decoder_dim=16, decoder_depth=1, decoder_heads=2).eval()


def test_spt_encoder_never_sees_a_removed_pixel():
    """SPT's tokens see half a patch of their neighbours: the removed patches are zeroed first,
    so what is in them cannot change the visible patches' latent (nor the prediction)."""
    mae = spt_mae()
    x, noise = torch.randn(2, 3, 16, 16), torch.rand(2, 16)
    _, mask, _ = mae.masking(2, noise)
    removed = hide_removed(torch.ones_like(x), mask, 4, (4, 4)) == 0  # the pixels of removed patches
    other = torch.where(removed, torch.randn_like(x) * 10, x)
    assert removed.any() and not torch.equal(other, x)
    with torch.no_grad():
        (pred, _), (pred_other, _) = mae.reconstruct(x, noise), mae.reconstruct(other, noise)
    assert torch.allclose(pred, pred_other, atol=1e-6)
    loss, pred, mask = mae(x, noise)
    assert pred.shape == (2, 16, 48) and torch.isfinite(loss)


def test_plain_patches_are_not_hidden_but_spt_ones_are():
    assert not MaskedAutoencoder(tiny("learned_1d"), decoder_dim=16, decoder_heads=2).hides_pixels
    assert spt_mae().hides_pixels


REFUSED = {  # what cannot be masked patch by patch -> the start of its one line
    "conv tokenizer": (["+model/embed=conv_tokenizer"],
                       "error: model.embed: MAE masks the image patch by patch, but ConvTokenizer's"),
    "CNN stem": (["model=vit_hybrid_lite"],
                 "error: model.embed: MAE masks the image patch by patch, but HybridEmbed's"),
    "GPSA": (["+model/attention=gpsa", "model.attention.local_blocks=1"],
             "error: model.attention: GatedPositionalSelfAttention computes its positions"),
}


def test_cli_refuses_what_cannot_be_masked_in_one_line(tmp_path):
    """Through the real entry point (experiment=mae_pretrain): one `error:` line, exit 2, before
    any epoch. The three runs go side by side, so the test costs about one start-up."""
    runs = {name: subprocess.Popen(
        [sys.executable, str(ROOT / "src" / "train.py"), "experiment=mae_pretrain", *argv,
         f"hydra.run.dir={tmp_path / str(i)}"], cwd=tmp_path, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env={**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"})
        for i, (name, (argv, _)) in enumerate(REFUSED.items())}
    for name, run in runs.items():
        _, stderr = run.communicate(timeout=600)
        lines = stderr.strip().splitlines()
        assert run.returncode == 2 and lines[-1].startswith(REFUSED[name][1]), (name, stderr[-2000:])
        assert "Traceback" not in stderr and "full_key" not in stderr, name


@pytest.mark.parametrize("options, message", [
    (dict(mask_ratio=1.0), r"^module\.mae\.mask_ratio=1\.0 must be in \[0, 1\)"),
    (dict(mask_ratio=0.99), r"^module\.mae\.mask_ratio=0\.99 must be .* least one of the 16 patches"),
    (dict(init="jax"), r"^module\.mae\.init='jax' is not one of mae, vit$"),
    (dict(decoder_dim=18), r"^MAE decoder width 18 must be divisible by 4"),
])
def test_bad_mae_values_are_one_line(options, message):
    with pytest.raises(ConfigError, match=message):
        MaskedAutoencoder(tiny("learned_1d"), **{"decoder_heads": 2, "decoder_dim": 16, **options})


def test_the_mae_benchmark_times_both_steps_side_by_side():
    import runpy

    main = runpy.run_path(str(ROOT / "src" / "bench_mae.py"), run_name="bench_mae")["main"]
    result = main(["rounds=1", "warmup=0", "batch_size=4", "model.depth=1", "module.mae.mask_ratio=0.5"])
    assert all(result[f"{k}_ms"] > 0 for k in ("supervised_step", "mae_step", "mae_step_no_decoder_blocks"))
    assert result["ratio"] > 0 and result["mask_ratio"] == 0.5 and result["patches"] == 16
