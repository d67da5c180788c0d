"""Plain-PyTorch models: no Lightning or Hydra in here."""

from .embed import PatchEmbed, patchify
from .vit import VisionTransformer

__all__ = ["VisionTransformer", "PatchEmbed", "patchify"]
