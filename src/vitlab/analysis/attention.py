"""What the attention looks at: attention rollout (Abnar & Zuidema, 2020; the ViT paper's
Figs. 6 and 14) and mean attention distance per head and depth (the ViT paper's Fig. 7 right).

Both take the per-block softmax maps of `VisionTransformer.attention_maps`, a list of
(B, H, N, N) tensors whose first `num_prefix` tokens are the class token (if any), followed by
the patch tokens in raster order over the grid (h, w).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure


def attention_rollout(maps: list[torch.Tensor], head_fusion: str = "mean") -> torch.Tensor:
    """(B, N, N) rollout: how much each output token draws on each input token across all
    blocks. Per block, heads are fused and the residual path is accounted for as
    0.5 * A + 0.5 * I; the blocks' matrices are multiplied from the first to the last.
    Every row sums to 1."""
    if head_fusion not in ("mean", "max", "min"):
        raise ValueError(f"head_fusion={head_fusion!r} is not one of mean, max, min")
    rollout = None
    n = maps[-1].shape[-1]
    for attn in maps:
        a = getattr(attn.float(), head_fusion)(dim=1)
        a = a.values if head_fusion != "mean" else a
        # a class token that joins late (ConViT) passes the earlier blocks unchanged: identity
        if a.shape[-1] < n:
            eye = torch.eye(n, device=a.device).expand(a.shape[0], -1, -1).clone()
            eye[:, n - a.shape[-1]:, n - a.shape[-1]:] = a
            a = eye
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], device=a.device)
        a = a / a.sum(dim=-1, keepdim=True)  # max/min fusion leaves rows unnormalised
        rollout = a if rollout is None else a @ rollout
    return rollout


def rollout_map(maps: list[torch.Tensor], grid: tuple[int, int], num_prefix: int) -> torch.Tensor:
    """(B, h, w) map over the patches, scaled to a maximum of 1: the class token's row of the
    rollout, or without a class token (mean pooling) the mean of the patch tokens' rows."""
    rollout = attention_rollout(maps)
    rows = rollout[:, 0] if num_prefix else rollout[:, num_prefix:].mean(dim=1)
    patches = rows[:, num_prefix:].reshape(-1, *grid)
    return patches / patches.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)


def mean_attention_distance(maps: list[torch.Tensor], grid: tuple[int, int], num_prefix: int,
                            pixels_per_token: float = 1.0) -> torch.Tensor:
    """(depth, heads): for each block and head, the attention-weighted distance between a query
    patch and the patches it attends to, averaged over query patches and images, in pixels
    (grid distance × `pixels_per_token`). The class token has no position: it is left out as a
    query, and as a key the remaining weights are renormalised over the patches. Blocks before
    a late class token (ConViT) have no prefix: each map's own token count tells."""
    h, w = grid
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    centres = torch.stack([ys.flatten(), xs.flatten()], dim=-1).float()
    dist = torch.cdist(centres, centres) * pixels_per_token  # (N_p, N_p)
    out = []
    for attn in maps:
        p = attn.shape[-1] - h * w if num_prefix else 0
        a = attn.float()[:, :, p:, p:]
        a = a / a.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        out.append((a * dist.to(a.device)).sum(dim=-1).mean(dim=(0, 2)))  # (H,)
    return torch.stack(out).cpu()


def model_attention(model, images: torch.Tensor):
    """The maps, grid and pixels per token of `model` (a VisionTransformer) on `images`."""
    was_training = model.training
    model.eval()
    try:
        maps = model.attention_maps(images)
    finally:
        model.train(was_training)
    grid = model.embed.grid
    return maps, grid, images.shape[-1] / grid[1]


def _display(image: torch.Tensor):
    """(C, H, W) normalised tensor -> array for imshow, stretched to [0, 1]."""
    image = image.float()
    image = (image - image.min()) / (image.max() - image.min()).clamp_min(1e-12)
    return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()


def plot_rollout(images: torch.Tensor, heatmaps: torch.Tensor, labels=None) -> Figure:
    """Each image above its rollout map overlaid (bilinear upsampling to the image size)."""
    n = images.shape[0]
    up = F.interpolate(heatmaps[:, None].float(), size=images.shape[-2:], mode="bilinear",
                       align_corners=False)[:, 0]
    fig = Figure(figsize=(1.8 * n, 3.8), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        gray = images.shape[1] == 1
        for row in (0, 1):
            axes[row, i].imshow(_display(images[i].cpu()), cmap="gray" if gray else None)
            axes[row, i].set_axis_off()
        axes[1, i].imshow(up[i].cpu().numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
        if labels is not None:
            axes[0, i].set_title(f"label {int(labels[i])}", fontsize=8)
    fig.suptitle("Attention rollout (class token)")
    return fig


def plot_attention_distance(distance: torch.Tensor) -> Figure:
    """One dot per head at each depth, as the ViT paper's Fig. 7 (right)."""
    depth, heads = distance.shape
    fig = Figure(figsize=(4.5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    for head in range(heads):
        ax.scatter(range(1, depth + 1), distance[:, head].numpy(), s=14, label=f"head {head + 1}")
    ax.set_xlabel("Network depth (layer)")
    ax.set_ylabel("Mean attention distance (pixels)")
    ax.set_xticks(range(1, depth + 1))
    ax.set_ylim(bottom=0)
    if heads <= 8:
        ax.legend(fontsize=6, ncols=2)
    ax.set_title("Mean attention distance")
    return fig
