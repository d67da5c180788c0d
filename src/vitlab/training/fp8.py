"""Opt-in float8 training (`fp8=true`) through torchao: the transformer's Linear layers compute
their matmuls in float8 with dynamic scaling, on GPUs with float8 tensor cores (compute
capability 8.9+: Ada, Hopper, Blackwell). Pays off with compile=true and wide layers (ViT-B and
up); layers whose sizes are not multiples of 16, and the classifier head, stay in bf16."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError


def _eligible(module: nn.Module, name: str) -> bool:
    return (isinstance(module, nn.Linear) and name != "head"
            and module.in_features % 16 == 0 and module.out_features % 16 == 0)


def float8_training(model: nn.Module, device: torch.device) -> nn.Module:
    """The model with its eligible Linear layers swapped for torchao's Float8Linear, or a
    one-line ConfigError saying what is missing."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9):
        where = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        raise ConfigError(f"fp8=true needs a GPU with float8 tensor cores (compute capability 8.9+: "
                          f"H100, L4, RTX 40xx, ...); this run is on {where}")
    try:
        from torchao.float8 import convert_to_float8_training
    except ImportError as error:
        raise ConfigError(f"fp8=true needs torchao ({error}): pip install 'vitlab[fp8]'") from None
    return convert_to_float8_training(model, module_filter_fn=_eligible)
