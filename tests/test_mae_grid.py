"""The MAE reconstruction grid (analysis/reconstruction.py, callbacks/mae_grid.py): pixels back
in image space, visible patches pasted back, a picture every N epochs in the run folder."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from conftest import compose_config
from hydra.utils import instantiate
from test_pos_embed import tiny

from vitlab.analysis.reconstruction import reconstruction_panels, unnormalized_prediction
from vitlab.callbacks.mae_grid import MaeReconstructionGrid
from vitlab.models.mae import MaskedAutoencoder, hide_removed, normalized_patches
from vitlab.runs.build_model import build_model


def test_unnormalized_prediction_inverts_the_norm_pix_target():
    target = torch.rand(2, 5, 12) * 3 + 1
    assert torch.allclose(unnormalized_prediction(normalized_patches(target), target), target, atol=1e-4)


def test_panels_are_pixels_with_the_visible_patches_pasted_back():
    model = MaskedAutoencoder(tiny("learned_1d"), decoder_dim=16, decoder_depth=1, decoder_heads=2).eval()
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    pixels = torch.rand(3, 3, 16, 16)
    images = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    noise = torch.rand(3, model.num_patches)
    original, masked, recon, pasted = reconstruction_panels(model, images, noise, mean, std)
    _, mask = model.reconstruct(images, noise)
    hidden = lambda x: hide_removed(x, mask, model.patch_size, model.grid)  # noqa: E731
    assert torch.allclose(original, pixels, atol=1e-6)
    assert torch.allclose(masked, hidden(pixels), atol=1e-6)  # removed patches black
    assert torch.allclose(hidden(pasted), hidden(pixels), atol=1e-6)  # visible ones the original's
    assert torch.allclose(pasted - hidden(pasted), recon - hidden(recon))  # removed ones predicted
    assert recon.min() >= 0 and recon.max() <= 1


def test_the_grid_is_drawn_every_n_epochs_and_at_the_last(tmp_path):
    cfg = compose_config(["experiment=mae_pretrain", "model.depth=1"])
    module = instantiate(cfg.module, model=build_model(cfg.model, pretrained=False)).eval()
    data = instantiate(cfg.data)
    data.setup()
    grid = MaeReconstructionGrid(cfg.data.mean, cfg.data.std, every_n_epochs=2, num_images=3)
    for epoch in range(3):  # the hook as Lightning calls it after each validation
        trainer = SimpleNamespace(current_epoch=epoch, max_epochs=3, sanity_checking=False,
                                  is_global_zero=True, datamodule=data, default_root_dir=tmp_path,
                                  loggers=[], global_step=epoch)
        grid.on_validation_epoch_end(trainer, module)
    drawn = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert drawn == ["mae_epoch_002.png", "mae_epoch_003.png"]
    images, noise = grid._fixed
    assert images.shape == (3, 1, 32, 32) and noise.shape == (3, module.model.num_patches)
    val = data.splits["val"]
    assert torch.equal(images, torch.stack([val[i][0] for i in (0, round((len(val) - 1) / 2), len(val) - 1)]))
    grid.on_validation_epoch_end(trainer, module.model)  # not an MAE module: nothing drawn
