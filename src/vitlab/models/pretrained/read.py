"""Read a checkpoint file into vitlab's parameter names, at the geometry it was trained at.

Each format goes through timm where timm has a reader: the paper's and big_vision's `.npz` are
loaded into a timm model of the file's own shape by timm's `_load_weights`, timm's torch files
are filtered by timm's `checkpoint_filter_fn`; timm names become vitlab's with timm_convert.
What comes back records how its source resamples its tables (timm: bicubic + antialias; the
npz files: bilinear), which adapt.py uses to fit it to the model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch

from ...errors import ConfigError
from ..timm_convert import from_timm_relpos_state_dict, from_timm_state_dict

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
FORMATS = ".npz, .safetensors, " + ", ".join(TORCH_SUFFIXES)
NPZ_PREFIXES = ("", "opt/target/", "params/", "params/img/")  # where timm looks, in its order


@dataclass
class Source:
    state: dict[str, torch.Tensor]      # vitlab names
    kind: str                           # timm | timm_relpos | npz | vitlab
    interpolation: str = "bicubic"      # how this source resamples positional tables
    antialias: bool = True
    grid: tuple[int, int] | None = None  # the patch grid its tables were trained at, if known
    num_heads: int | None = None        # attention heads, where the file records them (.npz)
    notes: list[str] = field(default_factory=list)


def resolve(path: str | Path) -> Path:
    """The checkpoint file at `path`, once it exists in a format read here. A run folder is
    resolved to its checkpoint above models/ (build_model.py), which knows run folders."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.pretrained: no checkpoint file at {path.resolve()}")
    if path.suffix not in (".npz", ".safetensors", *TORCH_SUFFIXES):
        raise ConfigError(f"model.pretrained={path}: unknown format {path.suffix or '(none)'!r}; "
                          f"use one of {FORMATS}")
    return path


def read(path: str | Path, target) -> Source:
    """The weights at `path` in vitlab names; `target` (the vitlab model) only tells timm's
    filter which patch kernel and grid to resample to."""
    path = resolve(path)
    try:
        if path.suffix == ".npz":
            return read_npz(path)
        state = load_torch(path)
    except ConfigError:
        raise
    except Exception as e:  # torch, safetensors and numpy each fail on a bad file their own way
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"model.pretrained={path}: cannot read it ({first})") from None
    if "pytorch-lightning_version" in state or "hyper_parameters" in state:
        source = read_vitlab_ckpt(state)
        check_distill_token(source.state, target, path)
        return source
    state = unwrap(state)
    check_distill_token(state, target, path)
    return read_timm(state, target)


def check_distill_token(state: dict, target, path) -> None:
    """A DeiT distilled checkpoint only into a model with a distillation token, and back: their
    position tables differ by that token's row."""
    has, wants = "dist_token" in state, getattr(target, "dist_token", None) is not None
    if has != wants:
        raise ConfigError(f"model.pretrained={path} has {'a' if has else 'no'} distillation token "
                          f"(DeiT) and the model {'none' if has else 'one'}: set "
                          f"model.distill_token={str(has).lower()}")


def load_torch(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)  # no code from a pickle


def unwrap(state: dict) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint saved as {'state_dict': ...} or {'model': ...}, without a
    DataParallel `module.` prefix."""
    for key in ("state_dict", "model", "module"):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def read_vitlab_ckpt(ckpt: dict) -> Source:
    """A checkpoint of an earlier vitlab run: the LightningModule's `model.` (compiled models
    add `_orig_mod.`); of an MAE pre-training run (models/mae.py), its `model.encoder.`."""
    prefix = r"^model\.(_orig_mod\.)?"
    if any(re.match(prefix + r"encoder\.", key) for key in ckpt["state_dict"]):
        prefix += r"encoder\."  # the decoder stays behind
    state = {}
    for key, value in ckpt["state_dict"].items():
        if re.match(prefix, key):
            state[re.sub(prefix, "", key)] = value
    if not state:
        raise ConfigError("model.pretrained: a Lightning checkpoint without `model.` weights; "
                          "not a vitlab run's checkpoint")
    return Source(state, "vitlab")


def _stand_in(model) -> SimpleNamespace:
    """What timm's checkpoint_filter_fn reads of a model: the patch kernel, grid, position
    table and prefix tokens to resample to. vitlab's model has no timm-shaped pos_embed;
    one of the shape timm would have is enough."""
    pos = getattr(model.pos_embed, "weight", None)
    learned_1d = type(model.pos_embed).__name__ == "Learned1d"
    return SimpleNamespace(
        patch_embed=SimpleNamespace(proj=model.embed.proj, grid_size=tuple(model.embed.grid)),
        pos_embed=pos[:1] if learned_1d else None, num_prefix_tokens=model.num_prefix,
        no_embed_class=False)


def read_timm(state: dict[str, torch.Tensor], target) -> Source:
    from timm.models.vision_transformer import checkpoint_filter_fn
    relpos = any(k.endswith("relative_position_bias_table") for k in state)
    state = checkpoint_filter_fn(state, _stand_in(target))  # open_clip, dinov2 ... layouts too
    if relpos:
        return Source(resize_relpos(state, target), "timm_relpos", grid=tuple(target.embed.grid))
    try:
        converted = from_timm_state_dict(state)
    except ValueError as e:
        raise ConfigError(f"model.pretrained: {e}") from None
    return Source(converted, "timm", grid=tuple(target.embed.grid) if "pos_embed" in state else None)


def resize_relpos(state: dict[str, torch.Tensor], target) -> dict[str, torch.Tensor]:
    """timm's flat relative-bias tables resized to the model's grid with timm's
    resize_rel_pos_bias_table, then converted to vitlab's layout."""
    from timm.layers import resize_rel_pos_bias_table
    grid = tuple(target.embed.grid)
    extra = 3 if "cls_token" in state else 0
    out = {}
    for key, value in state.items():
        if key.endswith("relative_position_bias_table"):
            shape = ((2 * grid[0] - 1) * (2 * grid[1] - 1) + extra, value.shape[1])
            if value.shape != shape or grid[0] != grid[1]:
                value = resize_rel_pos_bias_table(value, grid, shape)
        out[key] = value
    try:
        return from_timm_relpos_state_dict(out, grid)
    except ValueError as e:
        raise ConfigError(f"model.pretrained: {e}") from None


def _npz_prefix(w) -> str:
    for prefix in NPZ_PREFIXES:
        if f"{prefix}embedding/kernel" in w.files:
            return prefix
    raise ConfigError("model.pretrained: an .npz without embedding/kernel; not a ViT checkpoint "
                      "of google-research/vision_transformer or big_vision")


def npz_timm_model(w, prefix: str):
    """A timm ViT (or R50 hybrid) of the shape the .npz was trained at, read from its arrays."""
    from timm.models.vision_transformer import VisionTransformer
    p = prefix
    kernel = w[f"{p}embedding/kernel"]  # (P, P, C, D), HWIO
    big_vision = f"{p}pos_embedding" in w.files
    pos = w[f"{p}pos_embedding" if big_vision else f"{p}Transformer/posembed_input/pos_embedding"]
    scanned = f"{p}Transformer/encoderblock/LayerNorm_0/scale" in w.files
    names = " ".join(w.files)
    depth = (w[f"{p}Transformer/encoderblock/LayerNorm_0/scale"].shape[0] if scanned else
             len(set(re.findall(rf"{re.escape(p)}Transformer/encoderblock_(\d+)/", names))))
    block = f"{p}Transformer/encoderblock{'' if scanned else '_0'}/"
    mha, mlp = ("MultiHeadDotProductAttention_0", "MlpBlock_0") if big_vision else (
        "MultiHeadDotProductAttention_1", "MlpBlock_3")
    query = w[f"{block}{mha}/query/kernel"]
    hidden = w[f"{block}{mlp}/Dense_0/kernel"].shape[-1]
    class_token = f"{p}cls" in w.files
    tokens = pos.shape[-2] - (class_token and not big_vision)
    side = int(round(tokens ** 0.5))
    if side * side != tokens:
        raise ConfigError(f"model.pretrained: the .npz position table has {tokens} patch "
                          "positions, not a square grid")
    classes = w[f"{p}head/bias"].shape[-1] if f"{p}head/bias" in w.files else 0
    embed_dim = kernel.shape[-1]
    args = dict(img_size=side * kernel.shape[0], patch_size=kernel.shape[0], in_chans=kernel.shape[2],
                num_classes=classes, embed_dim=embed_dim, depth=depth, num_heads=query.shape[-2],
                mlp_ratio=hidden / embed_dim, class_token=class_token,
                global_pool="token" if class_token else "avg", fc_norm=False,
                no_embed_class=big_vision and class_token)
    if f"{p}conv_root/kernel" not in w.files:
        return VisionTransformer(**args)
    from timm.models.vision_transformer_hybrid import _create_vision_transformer_hybrid, _resnetv2
    stages = sorted({int(m) for m in re.findall(rf"{re.escape(p)}block(\d+)/unit1/", names)})
    units = tuple(len(set(re.findall(rf"{re.escape(p)}block{s}/unit(\d+)/", names))) for s in stages)
    in_chans = w[f"{p}conv_root/kernel"].shape[2]
    stride = 4 * 2 ** (len(units) - 1)  # ResNetV2 stem 4, every stage after the first 2
    args.update(img_size=side * stride, patch_size=1, in_chans=in_chans)
    backbone = _resnetv2(units, in_chans=in_chans)
    return _create_vision_transformer_hybrid("vit_base_r50_s16_224", backbone=backbone,
                                             pretrained=False, **args)


def read_npz(path: Path) -> Source:
    import numpy as np
    from timm.models.vision_transformer import _load_weights
    with np.load(path, allow_pickle=False) as w:
        prefix = _npz_prefix(w)
        model = npz_timm_model(w, prefix)
        big_vision = f"{prefix}pos_embedding" in w.files
    with torch.no_grad():
        _load_weights(model, str(path))
    state = model.state_dict()
    grid = tuple(model.patch_embed.grid_size)
    if big_vision and model.cls_token is not None:  # no class slot: the class token has no position
        state["pos_embed"] = torch.cat([torch.zeros_like(state["pos_embed"][:, :1]),
                                        state["pos_embed"]], dim=1)
    try:
        converted = from_timm_state_dict(state)
    except ValueError as e:
        raise ConfigError(f"model.pretrained: {e}") from None
    return Source(converted, "npz", interpolation="bilinear", antialias=False, grid=grid,
                  num_heads=model.blocks[0].attn.num_heads if len(model.blocks) else None)
