"""All probes of a `probes:` config over one model and a fixed image subset, as summary.json
values: {"shift": {"2": acc, ...}, "shuffle": {...}, "occlusion": {...}, "cka": {layers, matrix}}."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ...errors import ConfigError
from .cka import cka_matrix
from .occlusion import occlusion_accuracy
from .shift import shift_accuracy
from .shuffle import shuffle_accuracy


def first_images(loader: Iterable, images: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's first `images` (image, label) pairs as a list of batches, kept on the CPU."""
    batches, count = [], 0
    for x, y in loader:
        take = min(len(x), images - count)
        batches.append((x[:take], y[:take]))
        count += take
        if count >= images:
            break
    if not count:
        raise ConfigError("probes: the split has no images to probe")
    return batches


def check_sizes(probes, img_size: tuple[int, int]) -> None:
    """Grids and occlusion cells that do not tile the image are refused before anything runs."""
    H, W = img_size
    for g in probes.get("shuffle") or []:
        if H % g or W % g:
            raise ConfigError(f"probes.shuffle: a {g}x{g} grid does not divide the {H}x{W} image")
    patch = probes.get("occlusion_patch", 4)
    if probes.get("occlusion") and (H % patch or W % patch):
        raise ConfigError(f"probes.occlusion_patch={patch} does not divide the {H}x{W} image")


def run_probes(model: nn.Module, batches: list, probes) -> dict:
    """The probes `probes` asks for, on `batches`; keys are strings so summary.json keeps them."""
    check_sizes(probes, tuple(batches[0][0].shape[-2:]))
    model.eval()
    seed, out = probes.get("seed", 0), {}
    if probes.get("shift"):
        out["shift"] = {str(k): v for k, v in shift_accuracy(model, batches, list(probes.shift)).items()}
    if probes.get("shuffle"):
        out["shuffle"] = {str(k): v for k, v in
                          shuffle_accuracy(model, batches, list(probes.shuffle), seed=seed).items()}
    if probes.get("occlusion"):
        patch = probes.get("occlusion_patch", 4)
        out["occlusion"] = {str(k): v for k, v in occlusion_accuracy(
            model, batches, list(probes.occlusion), patch=patch, seed=seed).items()}
    if probes.get("cka"):
        layers, matrix = cka_matrix(model, batches, max_images=probes.get("cka_images", 256))
        out["cka"] = {"layers": layers, "matrix": [[round(v, 4) for v in row] for row in matrix]}
    return out
