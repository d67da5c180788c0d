"""Shifted Patch Tokenization (SPT; Lee, Lee & Song 2021, "Vision Transformer for Small-Size
Datasets"; the authors' aanna0701/SPT_LSA_ViT).

The image is shifted by half a patch in the four diagonal directions (zero fill), the four copies
are concatenated with the original along the channels (5C), and each P×P×5C patch is flattened,
layer-normalised and linearly projected:

    S(x) = [x, x_lu, x_ru, x_lb, x_rb],   tokens = Linear(LN(patchify(S(x))))

so every token also sees the pixels of its neighbours' halves: a wider receptive field for the
same number of tokens. Same constructor contract as PatchEmbed (every positional variant works).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .embed import PatchEmbed, patchify


def shifted_copies(x: torch.Tensor, shift: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, 5C, H, W): the image and its four diagonal shifts by `shift` pixels."""
    s = shift
    p = F.pad(x, (s, s, s, s))
    H, W = x.shape[-2:]
    corners = [(0, 0), (0, 2 * s), (2 * s, 0), (2 * s, 2 * s)]  # lu, ru, lb, rb crops
    return torch.cat([x, *(p[..., i:i + H, j:j + W] for i, j in corners)], dim=1)


class ShiftedPatchEmbed(nn.Module):
    def __init__(self, img_size=224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 shift: int | None = None):
        super().__init__()
        self.grid = PatchEmbed(img_size, patch_size, in_chans, 1).grid  # checks P divides the size
        self.patch_size = patch_size
        self.in_chans = in_chans  # no convolution to read it from (FLOP counting)
        self.shift = patch_size // 2 if shift is None else shift  # the paper: half a patch
        if self.shift < 1:
            raise ValueError(f"SPT shift {self.shift}: patch_size {patch_size} is too small to shift")
        dim = 5 * in_chans * patch_size**2
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, embed_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        tokens = patchify(shifted_copies(x, self.shift), self.patch_size)
        return self.proj(self.norm(tokens)), grid
