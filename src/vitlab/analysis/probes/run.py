"""All probes of a `probes:` config over one model and a fixed image subset, as summary.json
values: {"shift": {"2": acc, ...}, "shift_circular": {...}, "shift_consistency": p,
"shuffle": {...}, "occlusion": {...}, "resolution": {"24": acc, ...}, "cka": {layers, matrix},
"skipped": {probe: why}}.
A probe the model cannot run is recorded under "skipped" with its reason, never raised: after a
training run nothing may lose the run."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import torch
from torch import nn

from ...data.eval_images import spaced_images
from ...errors import ConfigError
from .cka import cka_matrix
from .occlusion import occlusion_accuracy
from .resolution import resolution_accuracy
from .shift import black, shift_accuracy, shift_consistency
from .shuffle import shuffle_accuracy


def check_sizes(probes, img_size: tuple[int, int]) -> None:
    """Grids and occlusion cells that do not tile the image are refused before anything runs."""
    H, W = img_size
    for g in probes.get("shuffle") or []:
        if H % g or W % g:
            raise ConfigError(f"probes.shuffle: a {g}x{g} grid does not divide the {H}x{W} image")
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in probes.get("resolution") or []):
        raise ConfigError(f"probes.resolution={list(probes.resolution)}: give image sizes in pixels")
    fills(probes)  # a known fill
    patch = probes.get("occlusion_patch", 4)
    if probes.get("occlusion") and (H % patch or W % patch):
        raise ConfigError(f"probes.occlusion_patch={patch} does not divide the {H}x{W} image")


def _as_strings(results: dict) -> dict[str, float]:
    return {str(k): v for k, v in results.items()}


def _cka(model, batches, probes) -> dict:
    layers, matrix = cka_matrix(model, batches, max_images=probes.get("cka_images", 256))
    return {"layers": layers, "matrix": [[round(v, 4) for v in row] for row in matrix]}


FILLS = ("black", "edge", "mean")


def fills(probes, mean=None, std=None) -> tuple:
    """(shift fill, occlusion fill) from probes.fill and the images' normalisation: `black` the
    pixel value 0, `edge` the border pixels repeated (occlusion: black), `mean` the normalised 0
    (the dataset mean; what the probes filled with before). Without a normalisation: 0."""
    name = probes.get("fill", "black")
    if name not in FILLS:
        raise ConfigError(f"probes.fill={name!r}: use {', '.join(FILLS)}")
    dark = black(mean, std) if mean is not None and std is not None and name != "mean" else None
    return ("edge" if name == "edge" else dark), dark


def planned(probes, seed: int, mean=None, std=None) -> dict[str, Callable[[nn.Module, list], object]]:
    """{summary key: how to compute it} for the probes `probes` switches on; what a shift or an
    occlusion fills with follows probes.fill in pixel space (`mean`, `std`: the normalisation)."""
    plan = {}
    shift_fill, occlusion_fill = fills(probes, mean, std)
    if probes.get("shift"):
        plan["shift"] = lambda m, b: _as_strings(shift_accuracy(m, b, list(probes.shift), fill=shift_fill))
        if probes.get("shift_circular", True):
            plan["shift_circular"] = lambda m, b: _as_strings(
                shift_accuracy(m, b, list(probes.shift), circular=True))
    if probes.get("consistency_shift"):
        plan["shift_consistency"] = lambda m, b: shift_consistency(
            m, b, probes.consistency_shift, probes.get("consistency_pairs", 4), seed, fill=shift_fill)
    if probes.get("shuffle"):
        plan["shuffle"] = lambda m, b: _as_strings(shuffle_accuracy(m, b, list(probes.shuffle), seed=seed))
    if probes.get("occlusion"):
        plan["occlusion"] = lambda m, b: _as_strings(occlusion_accuracy(
            m, b, list(probes.occlusion), patch=probes.get("occlusion_patch", 4), seed=seed,
            fill=occlusion_fill))
    if probes.get("resolution"):
        plan["resolution"] = lambda m, b: _as_strings(resolution_accuracy(m, b, list(probes.resolution)))
    if probes.get("cka"):
        plan["cka"] = lambda m, b: _cka(m, b, probes)
    return plan


def run_probes(model: nn.Module, batches: list, probes, mean=None, std=None) -> dict:
    """The probes `probes` asks for, on `batches` (normalised by `mean`, `std`); keys are strings
    so summary.json keeps them. A probe that raises is recorded under "skipped" with its reason,
    and the others still run."""
    model.eval()
    out, skipped = {}, {}
    for name, compute in planned(probes, probes.get("seed", 0), mean, std).items():
        try:
            out[name] = compute(model, batches)
        except Exception as error:  # noqa: BLE001 - a probe the model cannot run is a result
            skipped[name] = f"{type(error).__name__}: {error}"
    if skipped:
        out["skipped"] = skipped
    if mean is not None and any(probes.get(k) for k in ("shift", "consistency_shift", "occlusion")):
        out["fill"] = probes.get("fill", "black")  # what moved-in and occluded pixels were
    return out


def probe_images(loader: Iterable, images: int,
                 batch_size: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`images` (image, label) pairs evenly spaced over the loader's split (spaced_images); a
    split without images is refused."""
    batches = spaced_images(loader, images, batch_size)
    if not batches:
        raise ConfigError("probes: the split has no images to probe")
    return batches


def probe_summary(model: nn.Module, loader: Iterable, probes, device: torch.device | str,
                  mean=None, std=None) -> dict:
    """summary.json values of the probes on probes.images images spread over the loader's split
    (probe_images), on `device`:
    {"probes": ..., "probe_images": n, "probe_time_s": s} (the same layout for src/probe.py and
    for the probes a training run makes of its best checkpoint)."""
    t0 = time.time()
    batches = probe_images(loader, probes.get("images", 512), probes.get("batch_size"))
    check_sizes(probes, tuple(batches[0][0].shape[-2:]))
    results = run_probes(model.to(device), batches, probes, mean, std)
    return {"probes": results, "probe_images": sum(len(y) for _, y in batches),
            "probe_time_s": round(time.time() - t0, 2)}
