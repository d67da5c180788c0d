"""Fit weights read from a file (read.py) to the model that will fine-tune them.

What a new task may change, each adapted as the source's own code does:
  * classes: a new head, zero-initialised (the ViT paper's fine-tuning), logged once; with
    new_head=False the checkpoint's own head is kept when its classes match;
  * image or patch size: positional tables resampled to the new grid (learned_1d with timm's
    resample_abs_pos_embed in the source's interpolation; 2-D, per-block and relative tables by
    the variant's own resample_loaded), the patch kernel with timm's resample_patch_embed;
  * input channels: the first convolution through timm's adapt_input_conv (RGB -> grey sums
    the filters), for the patch projection and for a hybrid's CNN stem alike.
Anything else that differs (width, depth, heads, positional variant) is refused with the first
mismatched key and both shapes: never a partial load.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ...errors import ConfigError
from .read import Source

log = logging.getLogger(__name__)

PATCH = "embed.proj.weight"


def input_conv(model: nn.Module) -> str | None:
    """The name of the convolution that sees the image: a hybrid's first CNN weight, else the
    patch projection."""
    for name, p in model.named_parameters():
        if name.startswith("embed.") and p.ndim == 4:
            return name
    return None


def fit_head(model: nn.Module, state: dict, path, new: bool = True, name: str = "head") -> dict:
    """The checkpoint's head if asked for and its classes match, else a zero-initialised one;
    a distillation head (`head_dist`, DeiT) alike."""
    if name == "head" and hasattr(model, "head_dist"):
        state = fit_head(model, state, path, new, "head_dist")
    head = getattr(model, name)
    keys = (f"{name}.weight", f"{name}.bias")
    if not isinstance(head, nn.Linear):
        return {k: v for k, v in state.items() if k not in keys}
    if not new and all(k in state and state[k].shape == getattr(head, k.rsplit(".", 1)[1]).shape
                       for k in keys):
        return state
    old = state.get(keys[0])
    log.info("pretrained %s: new zero-initialised %s for %d classes (the checkpoint's has %s)",
             path, name, model.num_classes, "none" if old is None else old.shape[0])
    return state | {keys[0]: torch.zeros_like(head.weight), keys[1]: torch.zeros_like(head.bias)}


def resample_positions(model: nn.Module, state: dict, source: Source) -> dict:
    from timm.layers import resample_abs_pos_embed
    pos = model.pos_embed
    for name, param in pos.named_parameters(recurse=False):
        key = f"pos_embed.{name}"
        value = state.get(key)
        if value is None or value.shape == param.shape or value.ndim != param.ndim:
            continue
        if type(pos).__name__ == "Learned1d" and value.shape[0] == param.shape[0] \
                and value.shape[-1] == param.shape[-1]:
            state[key] = torch.cat([resample_abs_pos_embed(
                t[None], list(pos.grid), list(source.grid) if source.grid else None,
                num_prefix_tokens=pos.num_prefix, interpolation=source.interpolation,
                antialias=source.antialias) for t in value])
        else:  # 2-D row/column, relative tables: the variant's own rule
            state[key] = pos.resample_loaded(name, value)
    return state


def resample_kernels(model: nn.Module, state: dict, source: Source) -> dict:
    from timm.layers import resample_patch_embed
    from timm.models import adapt_input_conv
    first = input_conv(model)
    if first in state:
        want = dict(model.named_parameters())[first]
        if state[first].shape[1] != want.shape[1]:
            state[first] = adapt_input_conv(want.shape[1], state[first])
    value = state.get(PATCH)
    want = model.embed.proj.weight
    if value is not None and value.ndim == 4 and value.shape[:2] == want.shape[:2] \
            and value.shape[-2:] != want.shape[-2:]:
        state[PATCH] = resample_patch_embed(value, list(want.shape[-2:]),
                                            interpolation=source.interpolation,
                                            antialias=source.antialias)
    return state


def check_fits(model: nn.Module, state: dict, path, heads: int | None = None) -> None:
    """One line naming the first key that still does not fit, with both shapes. The number of
    heads shapes no weight: it is checked where the file records it."""
    ours = model.blocks[0].attn.num_heads if len(getattr(model, "blocks", ())) else None
    if heads and ours and heads != ours:
        raise ConfigError(f"model.pretrained={path} does not fit the model: its attention has "
                          f"{heads} heads, the model's {ours} (set model.num_heads={heads})")
    own = model.state_dict()
    for key, param in own.items():
        if key not in state:
            raise ConfigError(f"model.pretrained={path} does not fit the model: {key} "
                              f"{tuple(param.shape)} is not in the checkpoint (another "
                              f"positional variant, pooling or stem?)")
        if state[key].shape != param.shape:
            raise ConfigError(f"model.pretrained={path} does not fit the model: {key} is "
                              f"{tuple(state[key].shape)} in the checkpoint, "
                              f"{tuple(param.shape)} in the model (another width, depth, number "
                              "of heads or positional variant?)")
    extra = [k for k in state if k not in own]
    if extra:
        raise ConfigError(f"model.pretrained={path} does not fit the model: the checkpoint has "
                          f"{extra[0]} {tuple(state[extra[0]].shape)}, which the model lacks "
                          f"(a deeper network or another positional variant?)")


def adapt(model: nn.Module, source: Source, path, new_head: bool = True) -> dict[str, torch.Tensor]:
    """The source's weights brought to the model's classes, grid, patch and channels."""
    state = fit_head(model, dict(source.state), path, new_head)
    state = resample_positions(model, state, source)
    state = resample_kernels(model, state, source)
    # buffers the model rebuilds itself (e.g. relative indices) are not in a state dict
    check_fits(model, state, path, source.num_heads)
    return state
