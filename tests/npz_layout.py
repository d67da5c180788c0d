"""Write a timm ViT's weights as the ViT paper's .npz (google-research/vision_transformer) or
big_vision's, so the readers can be tested without the published files. The inverse of timm's
`_load_weights`, which must read what this writes."""

from __future__ import annotations

import numpy as np
import torch


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().numpy()


def _hwio(conv_weight: torch.Tensor) -> np.ndarray:  # torch OIHW -> flax HWIO
    return _np(conv_weight.permute(2, 3, 1, 0))


def _resnet(w: dict, backbone, p: str) -> None:
    """A timm ResNetV2 (post-activation, GroupNorm, as the paper's R50) in BiT's names."""
    w[f"{p}conv_root/kernel"] = _hwio(backbone.stem.conv.weight)
    w[f"{p}gn_root/scale"] = _np(backbone.stem.norm.weight)
    w[f"{p}gn_root/bias"] = _np(backbone.stem.norm.bias)
    for i, stage in enumerate(backbone.stages):
        for j, block in enumerate(stage.blocks):
            bp = f"{p}block{i + 1}/unit{j + 1}/"
            for r in (1, 2, 3):
                w[f"{bp}conv{r}/kernel"] = _hwio(getattr(block, f"conv{r}").weight)
                w[f"{bp}gn{r}/scale"] = _np(getattr(block, f"norm{r}").weight)
                w[f"{bp}gn{r}/bias"] = _np(getattr(block, f"norm{r}").bias)
            if block.downsample is not None:
                w[f"{bp}conv_proj/kernel"] = _hwio(block.downsample.conv.weight)
                w[f"{bp}gn_proj/scale"] = _np(block.downsample.norm.weight)
                w[f"{bp}gn_proj/bias"] = _np(block.downsample.norm.bias)


def timm_to_npz(model, path, big_vision: bool = False) -> None:
    """The paper's layout (Transformer/encoderblock_i/..., posembed_input with a class slot) or,
    with big_vision=True, big_vision's (params/ prefix, pos_embedding without the class slot:
    the timm model must have no_embed_class=True or no class token)."""
    p = "params/" if big_vision else ""
    mha, mlp, ln2 = ("MultiHeadDotProductAttention_0", "MlpBlock_0", "LayerNorm_1") if big_vision \
        else ("MultiHeadDotProductAttention_1", "MlpBlock_3", "LayerNorm_2")
    D = model.embed_dim
    w: dict[str, np.ndarray] = {}
    if hasattr(model.patch_embed, "backbone"):
        _resnet(w, model.patch_embed.backbone, p)
    w[f"{p}embedding/kernel"] = _hwio(model.patch_embed.proj.weight)
    w[f"{p}embedding/bias"] = _np(model.patch_embed.proj.bias)
    if model.cls_token is not None:
        w[f"{p}cls"] = _np(model.cls_token)
    pos = "pos_embedding" if big_vision else "Transformer/posembed_input/pos_embedding"
    w[f"{p}{pos}"] = _np(model.pos_embed)
    for i, block in enumerate(model.blocks):
        bp = f"{p}Transformer/encoderblock_{i}/"
        heads = block.attn.num_heads
        w[f"{bp}LayerNorm_0/scale"] = _np(block.norm1.weight)
        w[f"{bp}LayerNorm_0/bias"] = _np(block.norm1.bias)
        q_k_v = zip(block.attn.qkv.weight.chunk(3), block.attn.qkv.bias.chunk(3), strict=True)
        for n, (wt, b) in zip(("query", "key", "value"), q_k_v, strict=True):
            w[f"{bp}{mha}/{n}/kernel"] = _np(wt.T.reshape(D, heads, D // heads))
            w[f"{bp}{mha}/{n}/bias"] = _np(b.reshape(heads, D // heads))
        w[f"{bp}{mha}/out/kernel"] = _np(block.attn.proj.weight.T.reshape(heads, D // heads, D))
        w[f"{bp}{mha}/out/bias"] = _np(block.attn.proj.bias)
        w[f"{bp}{ln2}/scale"] = _np(block.norm2.weight)
        w[f"{bp}{ln2}/bias"] = _np(block.norm2.bias)
        for r, fc in enumerate((block.mlp.fc1, block.mlp.fc2)):
            w[f"{bp}{mlp}/Dense_{r}/kernel"] = _np(fc.weight.T)
            w[f"{bp}{mlp}/Dense_{r}/bias"] = _np(fc.bias)
    w[f"{p}Transformer/encoder_norm/scale"] = _np(model.norm.weight)
    w[f"{p}Transformer/encoder_norm/bias"] = _np(model.norm.bias)
    w[f"{p}head/kernel"] = _np(model.head.weight.T)
    w[f"{p}head/bias"] = _np(model.head.bias)
    np.savez(path, **w)
