"""Convolutional tokenizer (CCT, Hassani et al. 2021; SHI-Labs/Compact-Transformers' Tokenizer).

image -> num_layers × [Conv k×k (no bias) -> ReLU -> MaxPool] -> feature map -> tokens (B, N, D)

Overlapping convolutions give the tokens a CNN's locality and translation equivariance while
staying a few thousand parameters (CCT-7/3x1: one 3×3 layer, 3 -> 256 channels, 6,912
parameters; 16×16 tokens at 32 px). Same constructor contract as PatchEmbed: `patch_size` is not
used (the convolutions and pooling set the grid), so every preset and positional variant works.
"""

from __future__ import annotations

import torch
from torch import nn

from .embed import to_2tuple


def _out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class ConvTokenizer(nn.Module):
    def __init__(self, img_size=224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 num_layers: int = 1, kernel_size: int = 3, stride: int | None = None,
                 padding: int | None = None, hidden_channels: int = 64, max_pool: bool = True,
                 pool_kernel: int = 3, pool_stride: int = 2, pool_padding: int = 1,
                 conv_bias: bool = False):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers={num_layers}: the tokenizer needs at least one conv layer")
        # CCT's defaults: stride max(1, k//2 - 1) and padding max(1, k//2) ("same" size for k=3)
        stride = max(1, kernel_size // 2 - 1) if stride is None else stride
        padding = max(1, kernel_size // 2) if padding is None else padding
        channels = [in_chans] + [hidden_channels] * (num_layers - 1) + [embed_dim]
        layers = []
        h, w = to_2tuple(img_size)
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            layers += [nn.Conv2d(c_in, c_out, kernel_size, stride, padding, bias=conv_bias), nn.ReLU()]
            h, w = (_out(s, kernel_size, stride, padding) for s in (h, w))
            if max_pool:
                layers.append(nn.MaxPool2d(pool_kernel, pool_stride, pool_padding))
                h, w = (_out(s, pool_kernel, pool_stride, pool_padding) for s in (h, w))
        if h < 1 or w < 1:
            raise ValueError(f"num_layers={num_layers} conv + pool layers shrink a {img_size} px "
                             "image to nothing: use fewer layers or max_pool=false")
        self.layers = nn.Sequential(*layers)
        self.grid = (h, w)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)  # as CCT

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.layers(x)  # (B, D, h, w)
        return x.flatten(2).transpose(1, 2), (x.shape[-2], x.shape[-1])
