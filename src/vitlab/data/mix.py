"""Batch Mixup / CutMix through timm's `Mixup`: mixed images and soft targets (B, C).

timm draws its mixing weight and CutMix box from NumPy's global generator. Each batch is
mixed under a generator seeded by the caller's key (seed, rank, epoch, batch), and the global
state is put back afterwards: the same seed gives the same batches, a resumed run mixes as the
uninterrupted one did, and nothing else's random stream shifts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class BatchMix:
    def __init__(self, mixup):
        self.mixup = mixup  # a timm.data.Mixup (conf/data/mix)

    @classmethod
    def of(cls, mixup) -> BatchMix | None:
        """None when the configured Mixup mixes nothing (both alphas 0 and no CutMix range)."""
        if mixup is None or not (mixup.mixup_alpha > 0 or mixup.cutmix_alpha > 0
                                 or mixup.cutmix_minmax is not None) or mixup.mix_prob <= 0:
            return None
        return cls(mixup)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, seed: Sequence[int]):
        state = np.random.get_state()
        np.random.seed(np.random.SeedSequence([int(s) % 2**63 for s in seed]).generate_state(1))
        try:
            return self.mixup(x, y)
        finally:
            np.random.set_state(state)
