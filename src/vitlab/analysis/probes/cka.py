"""Linear CKA (Kornblith et al., 2019) between a model's layers, or between two models' layers
(Raghu et al., 2021: do a hybrid's early layers look like a CNN's?): how alike two layers'
representations of the same images are, 1 for the same up to rotation and scale. Activations
come from forward hooks on named modules: ViT blocks (after a hybrid's CNN stem stages), CNN
stages (timm's feature_info), MLP layers; each flattened per image. Computed from Gram matrices,
so any feature width is cheap."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn


def _centred_gram(x: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1).double()
    gram = x @ x.T
    n = gram.shape[0]
    h = torch.eye(n, dtype=gram.dtype, device=gram.device) - 1.0 / n
    return h @ gram @ h


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """CKA of two representations (n, ...) of the same n inputs: <Kc, Lc> / (|Kc| |Lc|) with
    K = X X^T and L = Y Y^T centred, equal to |Y^T X|_F^2 / (|X^T X|_F |Y^T Y|_F) for centred X, Y."""
    k, l_ = _centred_gram(x), _centred_gram(y)
    return ((k * l_).sum() / (k.norm() * l_.norm())).item()


def layer_names(model: nn.Module) -> list[str]:
    """The modules whose outputs CKA compares, input side first: a ViT's embedding and blocks
    (a hybrid's CNN stem stages before them), a timm CNN's feature stages, an MLP's hidden layers."""
    modules = dict(model.named_modules())
    if "blocks" in modules and "embed" in modules:
        stem = [f"embed.backbone.{m}" for m in _stages(modules.get("embed.backbone"))]
        return [*(m for m in stem if m in modules), "embed",
                *(f"blocks.{i}" for i in range(len(modules["blocks"])))]
    if _stages(model):
        return _stages(model)
    if "layers" in modules:
        return [f"layers.{i}" for i in range(len(modules["layers"]))]
    raise ValueError(f"no layers to compare in {type(model).__name__}: give the module names")


def _stages(model: nn.Module | None) -> list[str]:
    """A timm features_only / feature_info model's stage modules, or none."""
    info = getattr(model, "feature_info", None)
    return [f["module"] for f in (info.info if hasattr(info, "info") else info)] if info else []


@torch.no_grad()
def activations(model: nn.Module, batches: Iterable, names: Sequence[str], max_images: int = 256) -> dict:
    """{name: (n, features) outputs of that module} over the first `max_images` images."""
    modules, device = dict(model.named_modules()), next(model.parameters()).device
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"no module named {', '.join(missing)} in {type(model).__name__}")
    seen: dict[str, list] = {n: [] for n in names}

    def keep(name):
        def hook(_module, _inputs, out):
            seen[name].append((out[0] if isinstance(out, tuple) else out).flatten(1).cpu())
        return hook

    hooks = [modules[n].register_forward_hook(keep(n)) for n in names]
    try:
        count = 0
        for x, _ in batches:
            model(x[:max_images - count].to(device))
            count += min(len(x), max_images - count)
            if count >= max_images:
                break
    finally:
        for h in hooks:
            h.remove()
    return {n: torch.cat(v) for n, v in seen.items()}


def _normed_grams(model: nn.Module, batches: Iterable, names: Sequence[str], max_images: int) -> dict:
    grams = {n: _centred_gram(a) for n, a in activations(model, batches, names, max_images).items()}
    return {n: g / g.norm() for n, g in grams.items()}


def cka_matrix(model: nn.Module, batches: Iterable, names: Sequence[str] | None = None,
               max_images: int = 256) -> tuple[list[str], list[list[float]]]:
    """(layer names, their layer x layer linear CKA) on the first `max_images` images."""
    names = list(names or layer_names(model))
    grams = _normed_grams(model, batches, names, max_images)
    return names, [[(grams[a] * grams[b]).sum().item() for b in names] for a in names]


def cross_cka_matrix(model: nn.Module, other: nn.Module, batches: Iterable,
                     max_images: int = 256) -> tuple[list[str], list[str], list[list[float]]]:
    """(model's layers, other's layers, CKA of each of model's layers (rows) against each of
    other's (columns)) on the same first `max_images` images: Raghu et al.'s cross-model heatmap."""
    rows, cols = layer_names(model), layer_names(other)
    a = _normed_grams(model, batches, rows, max_images)
    b = _normed_grams(other, batches, cols, max_images)
    return rows, cols, [[(a[r] * b[c]).sum().item() for c in cols] for r in rows]
