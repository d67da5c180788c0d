"""Cosine similarity of positional embeddings: the ViT paper's Figure 7 (centre).

Each patch's positional vector is compared with that of every other patch; tile (i, j) of the
figure shows, for the patch at row i and column j, its similarity to all patches as an h×w map.
Learned tables show rows and columns emerging from training; a fixed table can be drawn too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from ..models.pos_embed import AbsolutePositionalEmbedding


def has_learned_table(model: nn.Module) -> bool:
    """True for a model whose positional embedding is a learned table added to the tokens."""
    pos = getattr(model, "pos_embed", None)
    return isinstance(pos, AbsolutePositionalEmbedding) and any(
        p.requires_grad for p in pos.parameters()
    )


@torch.no_grad()
def position_similarity(model: nn.Module) -> torch.Tensor:
    """(h*w, h, w): cosine similarity between the positional vector of each patch (raster
    order) and those of all patches, on the model's construction grid. Patch part only (the
    class token is left out); with `where=every_layer`, the table of the stem."""
    pos = getattr(model, "pos_embed", None)
    if not isinstance(pos, AbsolutePositionalEmbedding):
        raise ValueError(f"{type(pos).__name__} adds no table to the tokens: nothing to compare")
    h, w = pos.grid
    table = pos.table(pos.grid, 0)[-h * w:].float()  # (h*w, D) for learned_1d and learned_2d
    table = F.normalize(table, dim=-1)
    return (table @ table.T).reshape(h * w, h, w).cpu()


def plot_position_similarity(sim: torch.Tensor, grid: tuple[int, int]) -> Figure:
    """A grid of h×w small heatmaps, one per patch, drawn as one image with gaps between tiles
    (one imshow is much faster than h*w axes). A pyplot-free Figure: it renders with Agg."""
    fig = Figure(figsize=(6, 5.4), layout="constrained")
    ax = fig.add_subplot()
    image = draw_similarity(ax, sim, grid)
    ax.set_title("Position embedding similarity")
    fig.colorbar(image, ax=ax, shrink=0.8, label="Cosine similarity")
    return fig


def draw_similarity(ax, sim: torch.Tensor, grid: tuple[int, int]):
    """The mosaic of `plot_position_similarity` on one matplotlib axis; returns the image."""
    h, w = grid
    tiles = torch.full((h, w, h + 1, w + 1), float("nan"))  # one row/column of gap per tile
    tiles[:, :, :h, :w] = torch.as_tensor(sim).reshape(h, w, h, w)
    mosaic = tiles.permute(0, 2, 1, 3).reshape(h * (h + 1), w * (w + 1))[:-1, :-1]
    image = ax.imshow(mosaic.numpy(), cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks([j * (w + 1) + (w - 1) / 2 for j in range(w)], [str(j + 1) for j in range(w)])
    ax.set_yticks([i * (h + 1) + (h - 1) / 2 for i in range(h)], [str(i + 1) for i in range(h)])
    ax.tick_params(length=0, labelsize=7)
    ax.set_xlabel("Input patch column")
    ax.set_ylabel("Input patch row")
    ax.set_frame_on(False)
    return image
