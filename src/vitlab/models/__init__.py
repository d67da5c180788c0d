"""Plain-PyTorch models: no Lightning or Hydra in here."""

from .embed import PatchEmbed, patchify
from .hybrid import HybridEmbed
from .vit import VisionTransformer

__all__ = ["VisionTransformer", "PatchEmbed", "HybridEmbed", "patchify"]
