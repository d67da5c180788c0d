"""The model of a config: `instantiate(cfg.model)` plus `model.pretrained`, which is vitlab's
key, not a VisionTransformer argument (the network stays plain PyTorch), and so is
`model.new_head`. Every place that builds a run's model goes through here."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..models.pretrained import load_pretrained
from .summary import checkpoint_of

OWN_KEYS = ("pretrained", "new_head")  # under model:, read here, not VisionTransformer arguments


def build_model(model_cfg: DictConfig, pretrained: bool = True) -> nn.Module:
    """Instantiate the network; load `model.pretrained` into it unless `pretrained=False`
    (evaluation and analysis load a run's own checkpoint over it). `model.pretrained` may name
    a run folder: its checkpoint is found here, so models/ reads files only."""
    path = model_cfg.get("pretrained") if pretrained else None
    new_head = model_cfg.get("new_head", True)
    # resolved here, while the nodes still see the root config
    if any(k in model_cfg for k in OWN_KEYS):
        model_cfg = OmegaConf.create({
            k: OmegaConf.to_container(model_cfg[k], resolve=True)
            if OmegaConf.is_config(model_cfg[k]) else model_cfg[k]
            for k in model_cfg if k not in OWN_KEYS})
    model = instantiate(model_cfg)
    if path:
        load_pretrained(model, checkpoint_of(path), new_head=new_head)
    return model
