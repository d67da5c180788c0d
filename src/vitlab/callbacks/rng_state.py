"""Random-number state in checkpoints, so a resumed run draws the same data order and
augmentations as an uninterrupted one (Lightning saves model, optimiser, schedule and loop
counters, but not the generators).

In a data-parallel run each rank has its own streams (train.py seeds rank r with seed + r):
the checkpoint keeps every rank's state, gathered when it is saved (Lightning saves on every
rank together), and each rank restores its own."""

from __future__ import annotations

import logging
import random

import lightning as L
import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def _world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def generator_state() -> dict:
    """This process's Python, NumPy, torch (and CUDA) generator states, in plain types:
    checkpoints load with torch.load(weights_only=True)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": (name, keys.tolist(), pos, has_gauss, gauss),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_generator_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGState(L.Callback):
    def state_dict(self) -> dict:
        rank, world = _world()
        states = [generator_state()]
        if world > 1:  # collective: Lightning calls this on every rank for each checkpoint
            states = [None] * world
            dist.all_gather_object(states, generator_state())
        return {"ranks": states}

    def load_state_dict(self, state: dict) -> None:
        rank, world = _world()
        states = state.get("ranks", [state])  # a checkpoint from before per-rank states: one
        if len(states) != world:
            log.warning("the checkpoint holds the generators of %d process(es), this run has %d: "
                        "rank %d keeps its own seed's streams", len(states), world, rank)
            if rank >= len(states):
                return
        set_generator_state(states[rank])
