"""Random-number state in checkpoints, so a resumed run draws the same data order and
augmentations as an uninterrupted one (Lightning saves model, optimiser, schedule and loop
counters, but not the generators)."""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch


class RNGState(L.Callback):
    def state_dict(self) -> dict:
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        # plain types only: checkpoints load with torch.load(weights_only=True)
        state = {"python": random.getstate(),
                 "numpy": (name, keys.tolist(), pos, has_gauss, gauss),
                 "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        random.setstate(state["python"])
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
