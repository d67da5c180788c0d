"""Load timm's VisionTransformer weights into ours (learned_1d at the stem, class-token pooling).

The two networks are the same computation; only a few names differ. Keys timm would need an
extra module for (register or distillation tokens, LayerScale, q/k norms, fc_norm) are refused
rather than dropped, so a converted checkpoint is never silently another network.
"""

from __future__ import annotations

import torch

RENAMES = {  # timm prefix -> ours
    "patch_embed.proj.": "embed.proj.",
    "pos_embed": "pos_embed.weight",
}
SAME = ("cls_token", "blocks.", "norm.", "head.")
BLOCK_PARTS = ("norm1.", "attn.qkv.", "attn.proj.", "norm2.", "mlp.fc1.", "mlp.fc2.")


def _convert_key(key: str) -> str | None:
    for old, new in RENAMES.items():
        if key.startswith(old):
            return new + key[len(old):]
    if key.startswith("blocks."):
        part = key.split(".", 2)[2]
        return key if part.startswith(BLOCK_PARTS) else None
    return key if key.startswith(SAME) else None


def from_timm_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm `VisionTransformer.state_dict()` -> `vitlab.models.VisionTransformer` state dict.

    timm's pos_embed (1, N+1, D) becomes our learned_1d table pos_embed.weight (1, N+1, D);
    the model to load into must use learned_1d with where=stem and pool=cls.
    """
    out, unknown = {}, []
    for key, value in sd.items():
        new = _convert_key(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise ValueError(f"timm keys with no counterpart in vitlab's VisionTransformer: "
                         f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
    return out
