"""none: no positional information; the model sees a bag of patches (paper, Table 8, first row).

Without positions self-attention is permutation-equivariant, so the output (class token or mean
pooling) is invariant to any permutation of the patches. The class token needs no treatment.
"""

from __future__ import annotations

from .base import PositionalEmbedding


class NoPosition(PositionalEmbedding):
    """Adds nothing and hands the attention nothing: the defaults of the interface."""
