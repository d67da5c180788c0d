"""model.init=mimetic (Trockman & Kolter, ICML 2023): every head's query-key product starts near
+I and its value-output product near -I, on every ViT preset, hybrid included; the default
initialisation is the one main's code made, bit for bit."""

from __future__ import annotations

import hashlib

import pytest
import torch
from conftest import compose_config

from vitlab.models import VisionTransformer
from vitlab.models.mimetic import factor, projections
from vitlab.runs.build_model import build_model

# sha256 (first 16 hex digits) of the state dict at seed 0, recorded with main's code before
# model.init existed (vitlab 6060fad); the same overrides as `preset` below
BEFORE = {"vit_micro": "7c187996a6df7a9c", "vit_hybrid": "c5adad3e927b8dae",
          "sl_vit": "a357cf0565da4b78", "convit_tiny": "6763642f9ca114c9"}


def preset(name, *overrides):
    size = ["model.patch_size=4"] if name == "convit_tiny" else ["data.in_chans=1"]
    cfg = compose_config([f"model={name}", "data=fake", "data.img_size=32", *size, *overrides])
    torch.manual_seed(0)
    return build_model(cfg.model)


def fingerprint(model):
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("name", BEFORE)
def test_the_default_init_is_unchanged_bit_for_bit(name):
    assert fingerprint(preset(name)) == BEFORE[name]


def head_products(attn):
    """Per head: (W_q,iᵀ W_k,i, W_o[:, i] W_v,i), each d x d."""
    q, k, v = projections(attn)
    heads = attn.num_heads
    h = q.shape[0] // heads
    rows = [slice(i * h, (i + 1) * h) for i in range(heads)]
    return [(q[r].T @ k[r], attn.proj.weight[:, r] @ v[r]) for r in rows]


def diagonal_against_rest(m):
    """Mean of the diagonal, and the spread (std) of the off-diagonal entries."""
    off = m[~torch.eye(len(m), dtype=torch.bool)]
    return m.diagonal().mean().item(), off.std().item()


@pytest.mark.parametrize("name", ["vit_micro", "vit_hybrid", "sl_vit", "convit_tiny"])
def test_mimetic_heads_have_qk_near_plus_identity_and_vo_near_minus_identity(name):
    model = preset(name, "model.init=mimetic")
    for block in model.blocks:
        for qk, vo in head_products(block.attn):
            diag, spread = diagonal_against_rest(qk.detach())
            assert diag > 3 * spread > 0  # clearly positive against the off-diagonal noise
            diag, spread = diagonal_against_rest(vo.detach())
            assert -diag > 3 * spread > 0  # clearly negative


def test_default_heads_have_no_such_structure():
    for qk, vo in head_products(preset("vit_micro").blocks[0].attn):
        for m in (qk, vo):
            diag, spread = diagonal_against_rest(m.detach())
            assert abs(diag) < 3 * spread


def test_only_the_attention_weights_change():
    default = preset("vit_micro").state_dict()
    mimetic = preset("vit_micro", "model.init=mimetic").state_dict()
    changed = {k for k in default if not torch.equal(default[k], mimetic[k])}
    assert changed == {f"blocks.{i}.attn.{p}.weight" for i in range(4) for p in ("qkv", "proj")}


def test_the_factors_are_the_best_rank_h_approximation():
    torch.manual_seed(0)
    m = torch.randn(6, 6)
    a, b = factor(m, 6)
    torch.testing.assert_close(a @ b.T, m, atol=1e-5, rtol=1e-5)
    a, b = factor(m, 2)
    U, S, Vh = torch.linalg.svd(m)
    torch.testing.assert_close(a @ b.T, U[:, :2] @ torch.diag(S[:2]) @ Vh[:2], atol=1e-5, rtol=1e-5)


def test_alpha_and_beta_are_config_values_and_bad_names_are_refused():
    cfg = compose_config(["experiment=inductive_bias", "bias=mimetic"])
    assert cfg.model.init == "mimetic"
    assert dict(cfg.model.init_args) == dict(alpha_qk=0.7, beta_qk=0.7, alpha_vo=0.4, beta_vo=0.4)
    assert build_model(cfg.model)(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="init=mimetic takes alpha_qk"):
        VisionTransformer(32, 8, 1, 10, 16, 1, 2, init="mimetic", init_args=dict(alpha=1.0))
    with pytest.raises(ValueError, match="init='xavier' is not one of default, mimetic"):
        VisionTransformer(32, 8, 1, 10, 16, 1, 2, init="xavier")
