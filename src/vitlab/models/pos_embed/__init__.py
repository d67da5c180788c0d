"""Positional-embedding variants: one file each, all behind the interface in base.py.

Config keys (conf/model/pos_embed/<key>.yaml): none, learned_1d, learned_2d, relative,
relative_bias, sincos_2d, rope_2d.
"""

from .base import AbsolutePositionalEmbedding, PositionalEmbedding, RelativeTable
from .learned_1d import Learned1d
from .learned_2d import Learned2d
from .none import NoPosition
from .relative import Relative
from .relative_bias import RelativeBias
from .rope_2d import Rope2d
from .sincos_2d import SinCos2d

__all__ = [
    "PositionalEmbedding",
    "AbsolutePositionalEmbedding",
    "RelativeTable",
    "NoPosition",
    "Learned1d",
    "Learned2d",
    "Relative",
    "RelativeBias",
    "SinCos2d",
    "Rope2d",
]
