"""A run folder read back: its saved config, its checkpoint and its model, for evaluation,
analysis and any tool that starts from a trained run (`ckpt_path=<run folder | .ckpt>`).

This is the one place a run folder's saved config is read, so what such a config may build
is decided here, once, for every reader."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from ..errors import ConfigError
from .summary import checkpoint_of

SAVED_CONFIG = Path(".hydra") / "config.yaml"

# What a saved config may build: vitlab's own parts and the library classes its configs name.
# A target must be spelt under one of these and also be defined in one of them once imported
# (so `vitlab.training.train.os.system`, an attribute reached through a vitlab module, is refused).
# VITLAB_ALLOW_TARGETS="mypkg.,other.Class" adds prefixes for run folders you trust.
ALLOWED_TARGETS = ("vitlab.", "torch.optim.", "torch.nn.", "torchvision.transforms.", "timm.data.",
                   "timm.layers.", "lightning.pytorch.callbacks.", "lightning.pytorch.loggers.",
                   "lightning.pytorch.strategies.", "lightning.pytorch.plugins.",
                   "lightning.pytorch.profilers.", "lightning.pytorch.Trainer")
# the resolvers vitlab's configs use; others (oc.create, oc.decode, ...) can build new nodes
SAFE_RESOLVERS = {"hydra", "now", "oc.env", "oc.select"}
_RESOLVER = re.compile(r"\$\{\s*([\w.]+)\s*:")


def run_dir_of(path: str | Path) -> Path:
    """The run folder of a checkpoint inside it (or the folder itself)."""
    path = Path(path).expanduser().resolve()
    for folder in (path, *path.parents):
        if (folder / SAVED_CONFIG).is_file():
            return folder
    raise ConfigError(f"ckpt_path={path}: no {SAVED_CONFIG} in any parent folder "
                      f"(the checkpoint must lie inside a vitlab run folder)")


def run_config(path: str | Path) -> DictConfig:
    """The config saved by Hydra in the run folder of `path` (a folder or a checkpoint), once
    every `_target_` in it is one vitlab may build (`check_targets`)."""
    saved = run_dir_of(path) / SAVED_CONFIG
    cfg = OmegaConf.load(saved)
    check_targets(cfg, saved)
    return cfg


def _allowed_prefixes() -> tuple[str, ...]:
    extra = os.environ.get("VITLAB_ALLOW_TARGETS", "")
    return ALLOWED_TARGETS + tuple(p.strip() for p in extra.split(",") if p.strip())


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name.startswith(p) if p.endswith(".") else name == p or name.startswith(p + ".")
               for p in prefixes)


def check_target(target, where: str, source: str | Path = "the config") -> None:
    """Refuse, in one line naming it, a `_target_` outside the allowlist: by its spelling before
    anything is imported, then by the module that defines what it names."""
    prefixes = _allowed_prefixes()
    if not isinstance(target, str) or "${" in target:
        raise ConfigError(f"{source}: {where}._target_={target!r} is not a class name; a run folder's "
                          f"config names what it builds in plain text")
    if not _under(target, prefixes):
        raise ConfigError(f"{source}: {where}._target_={target} is not a vitlab, torch, timm or "
                          f"Lightning class it may build; a run folder's config runs nothing else "
                          f"(if you trust it: VITLAB_ALLOW_TARGETS={target.rsplit('.', 1)[0]}.)")
    from hydra._internal.utils import _locate

    try:
        found = _locate(target)
    except ImportError:
        return  # fails on its own, naming the target, when instantiated
    defined_in = getattr(found, "__module__", None) or getattr(found, "__name__", "")
    packages = {".".join(p.rstrip(".").split(".")[:2]) for p in prefixes}  # torch.nn, lightning.pytorch
    if not _under(defined_in, tuple(packages)):
        raise ConfigError(f"{source}: {where}._target_={target} is {defined_in}'s, reached through "
                          f"an allowed module; a run folder's config runs nothing else")


def check_targets(cfg, source: str | Path = "the config", where: str = "") -> None:
    """Every `_target_` in `cfg` (nested, in lists too) may be built, and no interpolation calls
    a resolver that could make new ones; raises ConfigError naming the first that may not."""
    nodes = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig | ListConfig) else cfg
    items = nodes.items() if isinstance(nodes, dict) else enumerate(nodes) if isinstance(nodes, list) else ()
    for key, value in items:
        at = f"{where}.{key}".lstrip(".") if isinstance(nodes, dict) else f"{where}[{key}]"
        if key == "_target_":
            check_target(value, where or "<root>", source)
        elif isinstance(value, str):
            for resolver in _RESOLVER.findall(value):
                if resolver not in SAFE_RESOLVERS:
                    raise ConfigError(f"{source}: {at} calls the resolver ${{{resolver}:...}}; a run "
                                      f"folder's config may only use {sorted(SAFE_RESOLVERS)}")
        else:
            check_targets(value, source, at)


def load_model(path: str | Path, cfg: DictConfig | None = None) -> tuple[DictConfig, torch.nn.Module]:
    """(the run's config, its model in eval mode with the checkpoint's weights) of a run folder or
    checkpoint; `cfg` replaces the saved config (e.g. merged with a new image size)."""
    from .build_model import build_model

    ckpt = checkpoint_of(path)
    if not ckpt.is_file():
        raise ConfigError(f"ckpt_path={path}: no checkpoint at {ckpt}")
    cfg = run_config(path) if cfg is None else cfg
    model = build_model(cfg.model, pretrained=False)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    return cfg, model.eval()
