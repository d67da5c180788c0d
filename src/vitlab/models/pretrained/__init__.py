"""Start a model from published or earlier weights in a local file (`model.pretrained`).

read.py turns a file (timm .pth/.bin/.safetensors, the paper's or big_vision's .npz, a vitlab
.ckpt) into vitlab's names; adapt.py fits it to the new task (head, grid, patch,
channels) or says in one line why it cannot. Plain PyTorch + timm: no Lightning or Hydra.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from .adapt import adapt
from .read import Source, read, resolve

__all__ = ["load_pretrained", "read", "adapt", "resolve", "Source"]

log = logging.getLogger(__name__)


def load_pretrained(model: nn.Module, path: str | Path, new_head: bool = True) -> nn.Module:
    """Load every weight of `path` into `model` (adapted, strict), in place; returns the model.
    new_head: a zero-initialised head, as the ViT paper fine-tunes (also when the classes
    match: a new task's labels mean something else); False keeps the checkpoint's head when
    its classes match the model's."""
    source = read(path, model)
    state = adapt(model, source, path, new_head)
    model.load_state_dict(state, strict=True)
    log.info("pretrained: loaded %d tensors from %s (%s)", len(state), resolve(path), source.kind)
    return model
