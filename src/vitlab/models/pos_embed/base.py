"""The interface every positional variant implements.

The model calls two methods and nothing else:
  * `add(x, grid, layer)`: before block `layer` (0 = at the stem) absolute variants add their
    table to the tokens; the default returns x unchanged.
  * `attention(grid, layer)`: relative variants return the `AttentionPosition` (layers.py) that
    the attention of block `layer` applies to q/k; the default returns None. A variant with one
    table per block hands each block its own; a shared one hands all blocks the same.
Constructor arguments are the same for all: embed_dim, grid, num_prefix (class token count),
depth and num_heads, plus the variant's own options from its config file.

Both methods take an optional `keep`: (B, n) raster indices of the patches present, per sample
and in any order (MAE's encoder sees only its visible patches: models/mae.py); the prefix
tokens come first as always. None means every patch of the grid, in raster order. A variant
with one position per patch answers for such a subset by indexing what it computes for the grid
(`take_patches`, `pair_tokens`), so no block or attention knows that patches are missing.

Learned tables whose shape depends on the grid implement `resample_loaded`, so that a
checkpoint trained at another resolution loads by interpolating its tables (paper §3.2).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

WHERE = ("stem", "every_layer", "every_layer_shared")


def resample_grid_table(table: torch.Tensor, old: tuple[int, int], new: tuple[int, int]):
    """Bicubic 2-D interpolation of a (..., h*w, D) table laid out in raster order."""
    if tuple(old) == tuple(new):
        return table
    *lead, n, d = table.shape
    x = table.reshape(-1, old[0], old[1], d).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=tuple(new), mode="bicubic", align_corners=False)
    return x.permute(0, 2, 3, 1).reshape(*lead, new[0] * new[1], d).to(table.dtype)


def take_patches(table: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """Rows of a per-patch (h*w, ...) table for the patches in `keep` (B, n): (B, n, ...);
    the table itself when keep is None."""
    return table if keep is None else table[keep]


def pair_tokens(keep: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """(B, num_prefix + n) token indices into the full sequence (prefix tokens, then the h*w
    patches) of the tokens present: the prefix, then the patches in `keep`."""
    prefix = torch.arange(num_prefix, device=keep.device).expand(keep.shape[0], -1)
    return torch.cat([prefix, keep + num_prefix], dim=1)


def grid_coords(grid: tuple[int, int], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column index of every patch, in raster order: two (h*w,) integer tensors."""
    ys, xs = torch.meshgrid(torch.arange(grid[0], device=device),
                            torch.arange(grid[1], device=device), indexing="ij")
    return ys.flatten(), xs.flatten()


class PositionalEmbedding(nn.Module):
    absolute = False  # True for variants that add a table to the tokens

    @classmethod
    def check(cls, where: str, prefix: str = "") -> None:
        """`where` is known, and other than stem only for a variant with a table (`absolute`);
        config_checks calls this with prefix "model.pos_embed." before anything is built."""
        if where not in WHERE:
            raise ValueError(f"{prefix}where={where!r} is not one of {', '.join(WHERE)}")
        if where != "stem" and not cls.absolute:
            raise ValueError(f"{prefix}where={where!r} needs an absolute variant (learned_1d, "
                             f"learned_2d, sincos_2d); {cls.__name__} adds no table to the tokens: "
                             f"use {prefix}where=stem")

    def __init__(self, embed_dim: int, grid: tuple[int, int], num_prefix: int, depth: int,
                 num_heads: int, where: str = "stem"):
        super().__init__()
        self.check(where)
        self.embed_dim = embed_dim
        self.grid = tuple(grid)
        self.num_prefix = num_prefix
        self.depth = depth
        self.num_heads = num_heads

    def add(self, x: torch.Tensor, grid: tuple[int, int], layer: int,
            keep: torch.Tensor | None = None) -> torch.Tensor:
        return x

    def attention(self, grid: tuple[int, int], layer: int, keep: torch.Tensor | None = None):
        return None

    def resample_loaded(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """Parameter `name` from a checkpoint built for another grid, brought to this grid."""
        return value

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a checkpoint trained at another resolution: resample its tables to this grid
        for name, param in self.named_parameters(recurse=False):
            value = state_dict.get(prefix + name)
            if value is not None and value.shape != param.shape and value.ndim == param.ndim:
                state_dict[prefix + name] = self.resample_loaded(name, value)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class AbsolutePositionalEmbedding(PositionalEmbedding):
    """A table added to the tokens: at the stem, before every block (own table per block), or
    one shared table before every block (the ViT paper's Table 8 columns)."""

    absolute = True

    def __init__(self, *args, where: str = "stem", **kwargs):
        super().__init__(*args, where=where, **kwargs)
        self.where = where
        self.num_tables = self.depth if where == "every_layer" else 1

    def table(self, grid: tuple[int, int], index: int) -> torch.Tensor:
        """(num_prefix + h*w, D) or (h*w, D) table for this grid; subclasses implement."""
        raise NotImplementedError

    def add(self, x: torch.Tensor, grid: tuple[int, int], layer: int,
            keep: torch.Tensor | None = None) -> torch.Tensor:
        if layer > 0 and self.where == "stem":
            return x
        t = self.table(tuple(grid), layer if self.where == "every_layer" else 0).to(x.dtype)
        if keep is None and t.shape[0] == x.shape[1]:
            return x + t
        # tables that cover patches only leave the prefix (class token) without a position
        rows = t.shape[0] - grid[0] * grid[1]  # the prefix's own rows: num_prefix or none
        # the prefix tokens present: a class token that joins at a later block
        # (class_token_at > 0) is in x from that block on, though the table has no row for it
        p = x.shape[1] - (grid[0] * grid[1] if keep is None else keep.shape[1])
        prefix = x[:, :p] + t[:rows] if rows else x[:, :p]
        return torch.cat([prefix, x[:, p:] + take_patches(t[rows:], keep)], dim=1)


class RelativeTable(PositionalEmbedding):
    """A learned table indexed by the offset between a query patch and a key patch.

    `weight` is (tables, 2h-1, 2w-1, C) for 2-D offsets (row, column), or (tables, 2hw-1, 1, C)
    for 1-D offsets in raster order, so its shape records the grid it was built for. There is
    one table per block (Shaw et al., Swin, timm's default), or one for all blocks with
    `shared=True` (BEiT's shared relative position bias, timm's `shared_rel_pos`).

    The class token has no offset. By default its entries are zero (content-only attention);
    with `cls_entries=True` each table learns three more entries, as BEiT and timm do: class
    to patch, patch to class and class to class (`cls`, (tables, 3, C), in that order).

    At another grid the offset part is interpolated bicubically to the new offset range (as
    BEiT and Swin do when fine-tuning at a higher resolution), in forward and on load.
    """

    def __init__(self, *args, offsets: str = "2d", shared: bool = False,
                 cls_entries: bool = False, init_std: float = 0.02, **kwargs):
        super().__init__(*args, **kwargs)
        if offsets not in ("1d", "2d"):
            raise ValueError(f"offsets={offsets!r} is not one of 1d, 2d")
        if cls_entries and not self.num_prefix:
            raise ValueError("cls_entries=True needs a class token (pool=cls)")
        self.offsets = offsets
        self.shared = shared
        tables = 1 if shared else self.depth
        self.weight = nn.Parameter(
            torch.empty(tables, *self.offset_grid(self.grid), self.channels()))
        self.cls = nn.Parameter(torch.empty(tables, 3, self.channels())) if cls_entries else None
        for p in self.parameters():
            nn.init.trunc_normal_(p, std=init_std)
        # the gather index at the construction grid, kept so each forward does not rebuild it
        self.register_buffer("index", self.pair_index(self.grid), persistent=False)

    def channels(self) -> int:
        """Entries per offset; subclasses implement."""
        raise NotImplementedError

    def offset_grid(self, grid: tuple[int, int]) -> tuple[int, int]:
        h, w = grid
        return (2 * h * w - 1, 1) if self.offsets == "1d" else (2 * h - 1, 2 * w - 1)

    def offset_index(self, grid: tuple[int, int], device=None) -> torch.Tensor:
        """(h*w, h*w) index into the flattened offset table of every (query, key) patch pair:
        the offset is query minus key, as in Swin, BEiT and timm."""
        ys, xs = grid_coords(grid, device)
        if self.offsets == "1d":
            i = torch.arange(len(ys), device=ys.device)
            return i[:, None] - i[None] + len(i) - 1
        dy = ys[:, None] - ys[None] + grid[0] - 1
        dx = xs[:, None] - xs[None] + grid[1] - 1
        return dy * (2 * grid[1] - 1) + dx

    def pair_index(self, grid: tuple[int, int], device=None) -> torch.Tensor:
        """(N, N) index of every (query, key) token pair, class token first, into the offset
        table followed by the three class-token entries (timm's gen_relative_position_index).
        A distillation token beside the class token shares the class token's entries."""
        index = self.offset_index(grid, device)
        p = self.num_prefix
        if not p:
            return index
        k = math.prod(self.offset_grid(grid))  # entries k, k+1, k+2 follow the offsets
        index = F.pad(index, (p, 0, p, 0))
        index[:p, :] = k  # class to patch
        index[:, :p] = k + 1  # patch to class
        index[:p, :p] = k + 2  # class to class
        return index

    def pair_table(self, grid: tuple[int, int], layer: int,
                   keep: torch.Tensor | None = None) -> torch.Tensor:
        """(N, N, C): the entry of every (query, key) token pair at this grid, for the table of
        block `layer`; class-token entries are zero unless learned. With `keep`, the pairs of
        the tokens present only: (B, n', n', C)."""
        t = 0 if self.shared else layer
        table = resample_grid_table(self.weight[t].flatten(0, 1), tuple(self.weight.shape[1:3]),
                                    self.offset_grid(grid))
        if self.num_prefix:
            cls = self.cls[t] if self.cls is not None else table.new_zeros(3, table.shape[-1])
            table = torch.cat([table, cls])
        index = self.index if tuple(grid) == self.grid else self.pair_index(grid, table.device)
        if keep is not None:  # rows, then columns, of the tokens present in each sample
            tokens = pair_tokens(keep, self.num_prefix)
            index = index[tokens[:, :, None], tokens[:, None, :]]
        return table[index]

    def resample_loaded(self, name, value):
        if name != "weight" or value.shape[0] != self.weight.shape[0]:
            return value  # another table count: let load_state_dict report the mismatch
        new = self.weight.shape[1:3]
        old = value.shape[1:3]
        return resample_grid_table(value.flatten(1, 2), old, new).unflatten(1, new)
