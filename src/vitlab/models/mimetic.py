"""Mimetic initialisation of self-attention (Trockman & Kolter, ICML 2023): start each head's
weights where trained ViTs' weights end up, instead of at random.

In a trained ViT, a head's query-key product W_q W_kᵀ is close to a multiple of the identity (a
token attends to tokens like itself, and through the positions, to its neighbours) and its
value-output product W_v W_o close to minus the identity. So, per head, with Z ~ N(0, 1/d):

    W_q W_kᵀ ≈ α₁ Z + β₁ I        W_v W_o ≈ α₂ Z − β₂ I

each d×d target M factorised by its SVD M = U Σ Vᵀ into the two d×h factors U_h Σ_h^½ and
V_h Σ_h^½ (h = head dim: the best rank-h approximation). Only the attention's weight matrices
change; its biases stay zero and every other layer keeps the model's own initialisation.

Written against vitlab's attentions: the fused `qkv` Linear (standard attention, LSA) sliced into
q, k and v, or GPSA's `qk` and `v`; `proj` is the output projection. A Linear's weight is
(out, in), so a head's rows of W_q are W_q,iᵀ: the product checked is W_q,iᵀ W_k,i (d×d).
"""

from __future__ import annotations

import torch
from torch import nn

# the paper's defaults for a ViT (its §4)
DEFAULTS = dict(alpha_qk=0.7, beta_qk=0.7, alpha_vo=0.4, beta_vo=0.4)


def factor(target: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B), each (d, rank), with A Bᵀ the best rank-`rank` approximation of `target`."""
    U, S, Vh = torch.linalg.svd(target)
    root = S[:rank].sqrt()
    return U[:, :rank] * root, Vh[:rank].T * root


def projections(attn: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The query, key and value weights (views, (d, d) each) of an attention module."""
    if hasattr(attn, "qkv"):
        return attn.qkv.weight.chunk(3, dim=0)
    if hasattr(attn, "qk") and hasattr(attn, "v"):  # GPSA projects q, k together and v apart
        return (*attn.qk.weight.chunk(2, dim=0), attn.v.weight)
    raise ValueError(f"init=mimetic: {type(attn).__name__} has no qkv projection to initialise")


@torch.no_grad()
def mimetic_attention(attn: nn.Module, alpha_qk: float = DEFAULTS["alpha_qk"],
                      beta_qk: float = DEFAULTS["beta_qk"], alpha_vo: float = DEFAULTS["alpha_vo"],
                      beta_vo: float = DEFAULTS["beta_vo"]) -> None:
    """Set one attention module's q, k, v and output weights, head by head."""
    q, k, v = projections(attn)
    d, heads = q.shape[1], attn.num_heads
    h = q.shape[0] // heads
    eye = torch.eye(d, device=q.device)

    def target(alpha, beta):  # alpha Z + beta I, Z ~ N(0, 1/d)
        return alpha * torch.randn(d, d, device=q.device) / d**0.5 + beta * eye

    for i in range(heads):
        rows = slice(i * h, (i + 1) * h)
        a, b = factor(target(alpha_qk, beta_qk), h)
        q[rows], k[rows] = a.T, b.T  # W_q,iᵀ W_k,i = A Bᵀ
        a, b = factor(target(alpha_vo, -beta_vo), h)
        attn.proj.weight[:, rows], v[rows] = a, b.T  # W_o[:, head i] W_v,i = A Bᵀ


def mimetic_init(blocks: nn.ModuleList, **alpha_beta: float) -> None:
    """Every block's attention, with the paper's α and β unless given (alpha_qk, beta_qk,
    alpha_vo, beta_vo)."""
    unknown = set(alpha_beta) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"init=mimetic takes {', '.join(DEFAULTS)}; not {', '.join(sorted(unknown))}")
    for block in blocks:
        mimetic_attention(block.attn, **{**DEFAULTS, **alpha_beta})
