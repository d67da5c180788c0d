"""The lecture's recurrent network: the ViT's patch tokens read one after another by a GRU or LSTM.

image (B, C, H, W) -> PatchEmbed (the ViT's linear patch projection) -> tokens in raster order
      -> k recurrent layers (GRU | LSTM, optionally bidirectional) -> last state | mean -> head

Its bias is sequentiality: a unidirectional RNN reads the patches in one order and its state at
step n summarises patches 1..n, so where a patch sits in the sequence is built in (no positional
table), and the same weights apply at every step (temporal invariance). Any number of patches
runs through it, so it takes other image sizes as they come. Layers are separate modules
(`layers.i`) so that layer decay, freezing and the CKA probe see each one. Plain PyTorch.
"""

from __future__ import annotations

import torch
from torch import nn

from .embed import PatchEmbed, to_2tuple

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}
POOLS = ("last", "mean")


class RNN(nn.Module):
    kind = "rnn"  # a baseline, not a ViT (vitlab/model_kind.py)

    @staticmethod
    def check(cell: str, pool: str, prefix: str = "") -> None:
        """A known cell and pooling, as ValueError naming `prefix + key` (config_checks: "model.")."""
        for key, value, known in (("cell", cell, CELLS), ("pool", pool, POOLS)):
            if value not in known:
                raise ValueError(f"{prefix}{key}={value!r} is not one of {', '.join(known)}")

    def __init__(self, img_size: int | tuple[int, int] = 32, patch_size: int = 8, in_chans: int = 3,
                 num_classes: int = 10, embed_dim: int = 128, cell: str = "gru", hidden: int = 224,
                 num_layers: int = 2, bidirectional: bool = False, pool: str = "last",
                 drop_rate: float = 0.0):
        """hidden: the state width of each direction; pool: `last` (the final state; both
        directions' final states when bidirectional) or `mean` (of every step's output)."""
        super().__init__()
        self.check(cell, pool)
        if hidden < 1 or num_layers < 1:
            raise ValueError(f"hidden={hidden} and num_layers={num_layers} must be positive")
        self.num_classes, self.pool, self.bidirectional = num_classes, pool, bidirectional
        self.img_size, self.in_chans = to_2tuple(img_size), in_chans  # the training size (FLOP count)
        self.embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        width = hidden * (2 if bidirectional else 1)
        self.layers = nn.ModuleList(
            CELLS[cell](embed_dim if i == 0 else width, hidden, batch_first=True, bidirectional=bidirectional)
            for i in range(num_layers))
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity()
        self.num_features = width

    def group_matcher(self, coarse: bool = False) -> dict:
        """Layer groups for layer decay and freezing: the patch embedding is the stem, each
        recurrent layer a block; the head, unmatched, comes last."""
        return dict(stem=r"^embed\.", blocks=[(r"^layers\.(\d+)", None)])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled representation (B, hidden x directions)."""
        x, _ = self.embed(x)
        for i, layer in enumerate(self.layers):
            x = layer(self.drop(x) if i else x)[0]  # dropout between layers, as nn.GRU's
        if self.pool == "mean":
            return x.mean(dim=1)
        if not self.bidirectional:
            return x[:, -1]
        # the forward direction ends at the last step, the backward one at the first
        h = x.shape[-1] // 2
        return torch.cat([x[:, -1, :h], x[:, 0, h:]], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.forward_features(x)))
