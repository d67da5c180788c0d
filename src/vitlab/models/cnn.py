"""The lecture's convolutional baseline: any timm CNN as a classifier (`model=cnn
model.backbone=resnet18`), trained from scratch or started from local timm weights.

It is timm's own model, returned as timm builds it: its parameter names, layer groups (layer
decay, freezing) and stage list (`feature_info`, which the CKA probe reads) are timm's. Locality
and translation equivariance come with its convolutions; global pooling makes its output
nearly translation invariant. Bad input raises ConfigError naming the config key.
"""

from __future__ import annotations

import timm
import torch
from torch import nn

from ..errors import ConfigError
from .embed import to_2tuple
from .hybrid import suggest_models, weights_file


def cnn(backbone: str = "resnet18", img_size: int | tuple[int, int] = 224, in_chans: int = 3,
        num_classes: int = 1000, weights: bool | str = False, drop_rate: float = 0.0,
        drop_path_rate: float | None = None, channels_last: bool = False,
        backbone_kwargs: dict | None = None, small_image_stem: bool = False) -> nn.Module:
    """timm's `backbone` with a `num_classes` classifier. weights: False (random init), True (an
    existing Hugging Face cache only) or a local checkpoint file, loaded by timm: a new
    classifier when the classes differ, the first convolution adapted to `in_chans`.
    backbone_kwargs go to timm.create_model (e.g. layers=[1, 1, 1, 1] for a shallower ResNet).
    small_image_stem: a ResNet's 7x7 stride-2 stem and max-pool become one 3x3 stride-1
    convolution, as CIFAR ResNets have (total stride 8: a 4x4 last map at 32 px, not 1x1)."""
    if not timm.is_model(backbone):
        close = ", ".join(suggest_models(backbone)) or "none"
        raise ConfigError(f"model.backbone={backbone!r} is not a timm model; close names: {close}")
    file = weights_file(backbone, weights, key="model.weights")
    load = dict(pretrained=True, pretrained_cfg_overlay=dict(file=file)) if file else {}
    kwargs = dict(backbone_kwargs or {})
    if drop_path_rate is not None:  # not every timm CNN has stochastic depth: only when asked
        kwargs["drop_path_rate"] = drop_path_rate
    model = timm.create_model(backbone, num_classes=num_classes, in_chans=in_chans,
                              drop_rate=drop_rate, **load, **kwargs)
    if small_image_stem:
        _small_image_stem(model, backbone)
    if not getattr(model, "feature_info", None):
        raise ConfigError(f"model.backbone={backbone}: timm lists no feature stages for it; use a "
                          "CNN (resnet*, convnext*, efficientnet*, regnet*, ...)")
    _check_image_size(model, backbone, in_chans, img_size)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def _small_image_stem(model: nn.Module, backbone: str) -> None:
    """Replace a timm ResNet's stem (7x7 conv, stride 2, then a stride-2 max-pool) by a 3x3
    stride-1 convolution of the same width, initialised as timm initialises its convolutions."""
    if not isinstance(getattr(model, "conv1", None), nn.Conv2d) or not hasattr(model, "maxpool"):
        raise ConfigError(f"model.small_image_stem=true needs a timm ResNet (conv1 + maxpool stem); "
                          f"model.backbone={backbone} has none")
    old = model.conv1
    model.conv1 = nn.Conv2d(old.in_channels, old.out_channels, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    for info in model.feature_info:  # the stem no longer strides 4
        info["reduction"] = max(1, info["reduction"] // 4)


cnn.kind = "cnn"  # a baseline, not a ViT, and already timm's own model (vitlab/model_kind.py)


@torch.no_grad()
def _check_image_size(model: nn.Module, backbone: str, in_chans: int, img_size) -> None:
    """One forward pass of a blank image: a CNN's padding rules, not its strides, say how small
    an image it takes; failing here beats failing at the first training step."""
    H, W = to_2tuple(img_size)
    training = model.training
    model.eval()  # BatchNorm in train mode fails on one image and would move its statistics
    try:
        model(torch.zeros(1, in_chans, H, W))
    except RuntimeError as e:
        raise ConfigError(f"data.img_size={H}x{W} is too small for model.backbone={backbone}: "
                          f"{str(e).splitlines()[0]}") from None
    finally:
        model.train(training)
