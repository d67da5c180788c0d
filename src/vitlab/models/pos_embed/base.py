"""The interface every positional variant implements.

The model calls two methods and nothing else:
  * `add(x, grid, layer)`: before block `layer` (0 = at the stem) absolute variants add their
    table to the tokens; the default returns x unchanged.
  * `attention(grid)`: relative variants return an `AttentionPosition` (layers.py) that every
    block's attention applies to q/k; the default returns None.
Constructor arguments are the same for all: embed_dim, grid, num_prefix (class token count),
depth and num_heads, plus the variant's own options from its config file.
"""

from __future__ import annotations

import torch
from torch import nn

WHERE = ("stem", "every_layer", "every_layer_shared")


class PositionalEmbedding(nn.Module):
    absolute = False  # True for variants that add a table to the tokens

    def __init__(self, embed_dim: int, grid: tuple[int, int], num_prefix: int, depth: int,
                 num_heads: int):
        super().__init__()
        self.embed_dim = embed_dim
        self.grid = tuple(grid)
        self.num_prefix = num_prefix
        self.depth = depth
        self.num_heads = num_heads

    def add(self, x: torch.Tensor, grid: tuple[int, int], layer: int) -> torch.Tensor:
        return x

    def attention(self, grid: tuple[int, int]):
        return None


class AbsolutePositionalEmbedding(PositionalEmbedding):
    """A table added to the tokens: at the stem, before every block (own table per block), or
    one shared table before every block (the ViT paper's Table 8 columns)."""

    absolute = True

    def __init__(self, *args, where: str = "stem", **kwargs):
        super().__init__(*args, **kwargs)
        if where not in WHERE:
            raise ValueError(f"where={where!r} is not one of {', '.join(WHERE)}")
        self.where = where
        self.num_tables = self.depth if where == "every_layer" else 1

    def table(self, grid: tuple[int, int], index: int) -> torch.Tensor:
        """(num_prefix + h*w, D) or (h*w, D) table for this grid; subclasses implement."""
        raise NotImplementedError

    def add(self, x: torch.Tensor, grid: tuple[int, int], layer: int) -> torch.Tensor:
        if layer > 0 and self.where == "stem":
            return x
        t = self.table(tuple(grid), layer if self.where == "every_layer" else 0).to(x.dtype)
        if t.shape[0] == x.shape[1]:
            return x + t
        # tables that cover patches only leave the prefix (class token) without a position
        return torch.cat([x[:, : self.num_prefix], x[:, self.num_prefix:] + t], dim=1)
