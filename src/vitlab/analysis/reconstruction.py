"""MAE's reconstruction picture (facebookresearch/mae `demo/mae_visualize.ipynb`): per image, the
original, the masked input, the reconstruction, and the reconstruction with the visible patches
pasted back, all in pixel space (the data's normalisation undone). Plain functions over a
models.mae.MaskedAutoencoder and a batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from matplotlib.figure import Figure

from ..models.embed import patchify
from ..models.mae import MaskedAutoencoder, hide_removed, unpatchify

COLUMNS = ("original", "masked", "reconstruction", "reconstruction + visible")


def unnormalized_prediction(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """A norm_pix_loss prediction (each patch in units of its own mean and std) back in the
    scale of the target patches (B, N, P·P·C): pred · std + mean of each target patch. So a
    removed patch's brightness and contrast in the picture are its true ones; the model
    predicted its structure (the usual way to draw a norm_pix_loss MAE)."""
    mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
    return pred * (var + eps) ** 0.5 + mean


@torch.no_grad()
def reconstruction_panels(model: MaskedAutoencoder, images: torch.Tensor, noise: torch.Tensor,
                          mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(4, B, C, H, W) in [0, 1], the COLUMNS, for normalised images (B, C, H, W) masked by
    `noise` (B, N); removed patches of the masked input are black."""
    pred, mask = model.reconstruct(images, noise)
    pred = pred.float()
    if model.norm_pix_loss:
        pred = unnormalized_prediction(pred, patchify(images.float(), model.patch_size))
    recon = unpatchify(pred, model.patch_size, model.grid)
    m = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    pixels = lambda x: (x.float() * s + m).clamp(0, 1)  # noqa: E731  the data's normalisation undone
    original, recon = pixels(images), pixels(recon)
    masked = hide_removed(original, mask, model.patch_size, model.grid)
    pasted = masked + recon - hide_removed(recon, mask, model.patch_size, model.grid)
    return torch.stack([original, masked, recon, pasted])


def plot_reconstructions(panels: torch.Tensor, title: str) -> Figure:
    """One row per image, the COLUMNS left to right."""
    _, n, channels = panels.shape[:3]
    fig = Figure(figsize=(1.6 * len(COLUMNS), 1.6 * n + 0.4), layout="constrained")
    axes = fig.subplots(n, len(COLUMNS), squeeze=False)
    for i in range(n):
        for j, name in enumerate(COLUMNS):
            image = panels[j, i].cpu().permute(1, 2, 0).numpy()
            gray = channels == 1
            axes[i, j].imshow(image[..., 0] if gray else image, cmap="gray" if gray else None, vmin=0, vmax=1)
            axes[i, j].set_axis_off()
            if i == 0:
                axes[i, j].set_title(name, fontsize=8)
    fig.suptitle(title)
    return fig
