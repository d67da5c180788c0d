"""Load timm weights into vitlab's VisionTransformer.

  * `from_timm_state_dict`: timm's VisionTransformer -> learned_1d at the stem, class-token
    pooling; VisionTransformerDistilled (`deit_*_distilled_*`) -> the same with
    `distill_token=True` (its dist_token and head_dist keep their names).
  * `from_timm_relpos_state_dict`: timm's VisionTransformerRelPos with `rel_pos_type='bias'` ->
    relative_bias (per-block or shared tables, class-token entries when timm has a class token).

The networks are the same computation; only a few names and layouts differ. Keys timm would need
an extra module for (register tokens, LayerScale, q/k norms, fc_norm, an MLP
position bias) are refused rather than dropped, so a converted checkpoint is never silently
another network.
"""

from __future__ import annotations

import math

import torch

RENAMES = {  # timm prefix -> ours
    "patch_embed.proj.": "embed.proj.",
    "patch_embed.backbone.stem.": "embed.backbone.stem_",  # a hybrid's CNN (features_only names)
    "patch_embed.backbone.stages.": "embed.backbone.stages_",
    "pos_embed": "pos_embed.weight",
}
SAME = ("cls_token", "dist_token", "blocks.", "norm.", "head.", "head_dist.")
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


REL_TABLE = "relative_position_bias_table"
SHARED_TABLE = f"shared_rel_pos.{REL_TABLE}"


def _split_relpos_tables(sd: dict[str, torch.Tensor]):
    """timm's bias tables stacked in block order (or the shared one), and the other keys."""
    per_block, shared, rest = {}, None, {}
    for key, value in sd.items():
        if key == SHARED_TABLE:
            shared = value
        elif key.startswith("blocks.") and key.endswith(f".attn.rel_pos.{REL_TABLE}"):
            per_block[int(key.split(".")[1])] = value
        else:
            rest[key] = value
    if shared is not None and per_block:
        raise ValueError("timm weights with shared and per-block position biases: vitlab's "
                         "relative_bias has one or the other (model.pos_embed.shared)")
    if shared is None and not per_block:
        raise ValueError(f"no {REL_TABLE} in the timm weights: not a VisionTransformerRelPos "
                         "with rel_pos_type='bias'")
    tables = shared[None] if shared is not None else torch.stack(
        [per_block[i] for i in sorted(per_block)])
    return tables, rest


def from_timm_relpos_state_dict(sd: dict[str, torch.Tensor],
                                grid: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """timm `VisionTransformerRelPos.state_dict()` (rel_pos_type='bias', init_values=None, no
    fc_norm or q/k norms) -> `vitlab.models.VisionTransformer` with relative_bias.

    timm keeps per block (`blocks.i.attn.rel_pos.`) or shared (`shared_rel_pos.`, timm's
    `shared_rel_pos=True`) a flat table ((2h-1)(2w-1) [+ 3], heads); with a class token its last
    three rows are class to patch, patch to class and class to class. It becomes
    pos_embed.weight (tables, 2h-1, 2w-1, heads) and pos_embed.cls (tables, 3, heads). Both
    index offsets as query minus key, rows then columns (timm's gen_relative_position_index is
    vitlab's pair_index), so the entries keep their order. The model to load into uses
    model/pos_embed=relative_bias with offsets=2d, shared as timm's shared_rel_pos, cls_entries
    and pool=cls when timm has a class token (global_pool='token'), else pool=mean
    (global_pool='avg'). `grid` (h, w) is the patch grid; by default it is taken as square.
    """
    tables, rest = _split_relpos_tables(sd)
    if "pos_embed" in rest:
        raise ValueError("timm weights with an absolute pos_embed as well: vitlab's "
                         "relative_bias adds none")
    prefix = 3 if "cls_token" in sd else 0  # a class token adds its three entries
    offsets = tables.shape[1] - prefix
    if grid is None:
        side = math.isqrt(offsets)
        grid = ((side + 1) // 2,) * 2
    h, w = grid
    if offsets != (2 * h - 1) * (2 * w - 1):
        raise ValueError(f"timm's position bias has {offsets} offsets, not the "
                         f"(2h-1)(2w-1) of grid {tuple(grid)}: pass grid=(h, w)")
    out = from_timm_state_dict(rest)  # every other key is named as in timm's VisionTransformer
    out["pos_embed.weight"] = tables[:, :offsets].unflatten(1, (2 * h - 1, 2 * w - 1))
    if prefix:
        out["pos_embed.cls"] = tables[:, offsets:]
    return out
