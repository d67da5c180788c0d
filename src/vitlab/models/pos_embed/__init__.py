"""Positional-embedding variants: one file each, all behind the interface in base.py."""

from .base import AbsolutePositionalEmbedding, PositionalEmbedding
from .learned_1d import Learned1d

__all__ = ["PositionalEmbedding", "AbsolutePositionalEmbedding", "Learned1d"]
