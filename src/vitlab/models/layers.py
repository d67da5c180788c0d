"""Transformer encoder layers: multi-head self-attention, MLP and the pre-LayerNorm block.

The block knows nothing of positional variants: relative ones hand each block's attention an
`AttentionPosition` (pos_embed/base.py: `attention(grid, layer)`) that may rotate q/k and return
an additive logit bias.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn


class AttentionPosition(Protocol):
    """What a relative positional variant gives the attention of one block."""

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(B, H, N, d) q and k -> possibly rotated q, k and an additive bias broadcastable
        to the (B, H, N, N) logits (or None)."""
        ...


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)  # one fused projection, as timm
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _qkv(self, x: torch.Tensor, pos: AttentionPosition | None):
        B, N, C = x.shape
        # split along the "3" axis, then transpose each: the same views as a permute, but the
        # backward stacks dq, dk, dv straight into the qkv layout (one copy, not two)
        q, k, v = (t.transpose(1, 2) for t in
                   self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).unbind(2))
        bias = None
        if pos is not None:
            q, k, bias = pos(q, k)
        return q, k, v, bias

    def forward(self, x: torch.Tensor, pos: AttentionPosition | None = None) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v, bias = self._qkv(x, pos)
        if bias is not None:
            bias = bias.to(q.dtype)
        x = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.attn_drop if self.training else 0.0
        )
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, C)))

    @torch.no_grad()
    def attention_logits(self, x: torch.Tensor, pos: AttentionPosition | None = None):
        """Pre-softmax logits (B, H, N, N), computed explicitly: for analysis, not training."""
        q, k, _, bias = self._qkv(x, pos)
        logits = (q * self.scale) @ k.transpose(-2, -1)
        return logits if bias is None else logits + bias


class Mlp(nn.Module):
    """Two-layer GELU MLP."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth as the residual add: x + branch, where training drops the branch of
    whole samples at rate p and scales the kept ones by 1/(1-p). One addcmul, not a multiply
    then an add (a pass over the activations saved); plain x + branch when p is 0."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x + branch
        if self.p >= 1.0:
            return x + 0 * branch
        keep = 1.0 - self.p
        mask = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)
        return torch.addcmul(x, branch, mask.bernoulli_(keep).div_(keep))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 attn: nn.Module | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        # `attn`: another attention (LSA, GPSA: models/lsa.py, gpsa.py) with the same call
        self.attn = attn if attn is not None else Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, pos: AttentionPosition | None = None) -> torch.Tensor:
        x = self.drop_path(x, self.attn(self.norm1(x), pos))
        return self.drop_path(x, self.mlp(self.norm2(x)))
