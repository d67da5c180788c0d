"""Gated Positional Self-Attention (GPSA; ConViT, d'Ascoli et al. 2021; timm's `convit`).

Each head mixes content attention with a purely positional one through a learned gate:

    A_h = (1 - σ(λ_h)) softmax(q kᵀ / sqrt(d)) + σ(λ_h) softmax(v_hᵀ r_ij),   rows renormalised

where r_ij = (Δx, Δy, Δx² + Δy²) is the offset of key j from query i on the token grid and v_h
(`pos_proj`) is learned. `local_init` (called by the model after its own initialisation, as timm)
makes every head start as one tap of a sqrt(H)×sqrt(H) convolution: the positional softmax peaks
at a fixed offset per head, the gate starts at σ(1) ≈ 0.73 towards it, and `v` is the identity.
The heads then learn how far to leave locality. Parameter names follow timm, so convit
checkpoints map one to one. GPSA sees patch tokens only (ConViT inserts the class token after
the GPSA blocks: `model.class_token_at`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .pos_embed.base import grid_coords


def relative_indices(grid: tuple[int, int]) -> torch.Tensor:
    """(n, n, 3): for query i and key j the offsets (Δx, Δy, Δx² + Δy²), key minus query."""
    ys, xs = (c.float() for c in grid_coords(grid))
    dx, dy = xs[None] - xs[:, None], ys[None] - ys[:, None]
    return torch.stack([dx, dy, dx**2 + dy**2], dim=-1)


class GatedPositionalSelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, grid: tuple[int, int] = (14, 14),
                 locality_strength: float = 1.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.locality_strength = locality_strength
        self.qk = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.pos_proj = nn.Linear(3, num_heads)
        self.gating_param = nn.Parameter(torch.ones(num_heads))
        self.register_buffer("rel_indices", relative_indices(tuple(grid)), persistent=False)

    @torch.no_grad()
    def local_init(self):
        """timm's GPSA.local_init: identity values, each head a different tap of a conv kernel."""
        self.v.weight.copy_(torch.eye(self.v.weight.shape[0]))
        k = int(self.num_heads**0.5)
        center = (k - 1) / 2 if k % 2 == 0 else k // 2
        for h1 in range(k):
            for h2 in range(k):
                head = h1 + k * h2
                self.pos_proj.weight[head] = torch.tensor([2.0 * (h2 - center), 2.0 * (h1 - center), -1.0])
        self.pos_proj.weight.mul_(self.locality_strength)

    def attention(self, x: torch.Tensor, pos=None) -> torch.Tensor:
        """(B, H, N, N) attention weights (rows sum to 1)."""
        B, N, C = x.shape
        if N != self.rel_indices.shape[0]:
            raise ValueError(f"GPSA got {N} tokens for a grid of {self.rel_indices.shape[0]} patches: "
                             "it sees patch tokens only (ConViT inserts the class token after the "
                             "GPSA blocks: model.class_token_at)")
        q, k = self.qk(x).view(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        bias = None
        if pos is not None:  # a relative positional variant acts on the content part
            q, k, bias = pos(q, k)
        content = (q @ k.transpose(-2, -1)) * self.scale
        content = (content if bias is None else content + bias).softmax(dim=-1)
        position = self.pos_proj(self.rel_indices.to(x.dtype)).permute(2, 0, 1).softmax(dim=-1)
        gate = torch.sigmoid(self.gating_param).view(1, -1, 1, 1)
        attn = (1.0 - gate) * content + gate * position
        return attn / attn.sum(dim=-1, keepdim=True)

    def forward(self, x: torch.Tensor, pos=None) -> torch.Tensor:
        B, N, C = x.shape
        attn = F.dropout(self.attention(x, pos), self.attn_drop, self.training)
        v = self.v(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        return self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(B, N, C)))

    @torch.no_grad()
    def attention_logits(self, x: torch.Tensor, pos=None) -> torch.Tensor:
        """Log attention weights: their softmax gives the weights back (for analysis)."""
        return self.attention(x, pos).log()


def gpsa_blocks(layer: int, grid, depth: int | None = None, local_blocks: int = 10,
                locality_strength: float = 1.0, **kwargs) -> nn.Module | None:
    """The attention factory of `model.attention`: GPSA in the first `local_blocks` blocks (negative:
    all but the last -local_blocks), the standard attention (None) after them, as ConViT."""
    if local_blocks < 0 and depth is not None:
        local_blocks += depth
    if layer >= local_blocks:
        return None
    return GatedPositionalSelfAttention(grid=grid, locality_strength=locality_strength, **kwargs)
