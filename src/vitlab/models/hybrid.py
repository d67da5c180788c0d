"""Hybrid patch embedding: a timm CNN's feature map becomes the patch tokens (ViT paper, §3.1).

image -> timm CNN (features_only, one stage, stride s) -> p×p patches of the feature map
      -> linear projection (Conv2d, kernel = stride = p) -> tokens (B, N, D) on an (h, w) grid

Same constructor contract as PatchEmbed, so the model, the class token and every positional
variant work unchanged. Bad input raises ConfigError naming the config key, at construction.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache
from torch import nn

from ..errors import ConfigError
from .embed import to_2tuple

# what timm looks for in a Hugging Face repo when the pretrained config names no file
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def suggest_models(name: str, n: int = 5) -> list[str]:
    """Close timm model names: those containing `name`, else the nearest spellings."""
    names = timm.list_models(f"*{name}*")
    return names[:n] if names else difflib.get_close_matches(name, timm.list_models(), n=n)


def hf_cache_dir() -> str:
    return hf_constants.HF_HUB_CACHE


def weights_file(backbone: str, pretrained: bool | str | Path,
                 key: str = "model.embed.pretrained") -> str | None:
    """The checkpoint to load: None (random init), a local path, or a file already in the
    Hugging Face cache. Never downloads: training machines may have no network. `key`: the
    config key errors name (the CNN baseline's is model.weights)."""
    if pretrained is False or pretrained is None:
        return None
    if pretrained is not True:
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise ConfigError(f"{key}: no checkpoint file at {path.resolve()}")
        return str(path)
    cfg = timm.models.get_pretrained_cfg(backbone)
    hub_id = cfg.hf_hub_id if cfg is not None else None
    if not hub_id:
        raise ConfigError(f"{key}=true: timm has no Hugging Face weights for "
                          f"{backbone!r}; set {key} to a local checkpoint path")
    repo, _, revision = hub_id.partition("@")
    files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else HF_WEIGHT_FILES
    for filename in files:
        found = try_to_load_from_cache(repo, filename, cache_dir=hf_cache_dir(),
                                       revision=revision or None)
        if isinstance(found, str):
            return found
    raise ConfigError(f"{key}=true: weights for {backbone!r} ({repo}) are not "
                      f"in the Hugging Face cache {hf_cache_dir()}; download them once online, "
                      f"or set {key} to a local checkpoint path")


def create_backbone(backbone: str, out_index: int, in_chans: int, pretrained=False,
                    **kwargs) -> nn.Module:
    """timm CNN returning the feature map of stage `out_index` only; deeper stages are not
    built, so they cost no parameters."""
    if not timm.is_model(backbone):
        close = ", ".join(suggest_models(backbone)) or "none"
        raise ConfigError(f"model.embed.backbone={backbone!r} is not a timm model; "
                          f"close names: {close}")
    file = weights_file(backbone, pretrained)
    load = dict(pretrained=True, pretrained_cfg_overlay=dict(file=file)) if file else {}
    try:
        return timm.create_model(backbone, features_only=True, out_indices=(out_index,),
                                 in_chans=in_chans, **load, **kwargs)
    except IndexError:  # timm's own message is a bare "list index out of range"
        with torch.device("meta"):  # only to read its stages: no memory, no init cost
            info = timm.create_model(backbone, in_chans=in_chans, **kwargs).feature_info
        if -len(info) <= out_index < len(info):
            raise
        stages = ", ".join(f"{i} (stride {f['reduction']}, {f['num_chs']} ch)"
                           for i, f in enumerate(info))
        raise ConfigError(f"model.embed.out_index={out_index} is not a stage of {backbone}; "
                          f"it has {stages} (negative indices count from the end)") from None


class HybridEmbed(nn.Module):
    """A timm CNN stage as the patch embedding; `grid` is its (h, w) for the configured size."""

    def __init__(
        self,
        img_size=224,
        patch_size: int = 1,
        in_chans: int = 3,
        embed_dim: int = 768,
        backbone: str = "resnet50",
        out_index: int = -1,
        pretrained: bool | str = False,
        freeze: bool = False,
        channels_last: bool = False,
        backbone_kwargs: dict | None = None,
    ):
        """pretrained: False, True (an existing Hugging Face cache only) or a checkpoint path.
        backbone_kwargs go to timm.create_model (e.g. layers, stem_type, norm_layer)."""
        super().__init__()
        H, W = to_2tuple(img_size)
        self.patch_size = patch_size
        self.frozen = False
        self.channels_last = channels_last
        self.backbone = create_backbone(backbone, out_index, in_chans, pretrained,
                                        **dict(backbone_kwargs or {}))
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        chans, h, w = self._feature_shape(backbone, in_chans, H, W)
        where = f"the {h}x{w} feature map of {backbone} stage {out_index} at {H}x{W} px"
        if h < patch_size or w < patch_size:
            raise ConfigError(f"model.patch_size={patch_size} is larger than {where}; use a "
                              "smaller patch (the paper's is 1), a larger image or earlier stage")
        if h % patch_size or w % patch_size:
            fits = [p for p in range(1, min(h, w) + 1) if h % p == 0 and w % p == 0]
            raise ConfigError(f"model.patch_size={patch_size} does not divide {where}; "
                              f"use one of {fits}")
        self.grid = (h // patch_size, w // patch_size)
        self.proj = nn.Conv2d(chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.set_frozen(freeze)

    @torch.no_grad()
    def _feature_shape(self, name: str, in_chans: int, H: int, W: int) -> tuple[int, int, int]:
        """Run a dummy image: padding rules differ between CNNs, so strides alone may lie."""
        training = self.backbone.training
        self.backbone.eval()  # BatchNorm in train mode fails on a 1×1 map and moves its stats
        try:
            return tuple(self._features(torch.zeros(1, in_chans, H, W)).shape[1:])
        except RuntimeError as e:
            raise ConfigError(f"data.img_size={H}x{W} is too small for model.embed.backbone="
                              f"{name}: {str(e).splitlines()[0]}") from None
        finally:
            self.backbone.train(training)

    def set_frozen(self, frozen: bool = True):
        """Frozen: no gradients, and BatchNorm statistics stay those of the loaded weights."""
        self.frozen = frozen
        self.backbone.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.backbone(x)[0]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(self._features(x))  # (B, D, h, w)
        grid = (x.shape[-2], x.shape[-1])
        return x.flatten(2).transpose(1, 2), grid
