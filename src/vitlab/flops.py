"""Model FLOPs, counted analytically per layer, and device peaks: for throughput and MFU.

Fused attention (scaled_dot_product_attention) hides the QKᵀ and AV products from FLOP
counters, so the count here is by hand from the model's layers: every Linear/Conv's
multiply-adds for the tokens it sees, plus N²·D for QKᵀ and N²·D for AV per block (and n²·D
for the Shaw-style relative keys of the n patches, N²·D with learned class-token entries).
MFU counts matmuls only (the PaLM convention); LayerNorm is reported apart (5 FLOPs per
element, as fvcore, which is how the published G-MAC figures of timm were counted).
Training = 3 × forward (backward costs two forwards' matmuls).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn


def _linear(layer: nn.Linear, tokens: int) -> int:
    return tokens * layer.in_features * layer.out_features


def _cnn_macs(module: nn.Module, image: torch.Tensor):
    """Multiply-adds of every Conv2d/Linear of a CNN stem for one image, from the shapes seen
    in one forward pass; returns (macs, output)."""
    total = 0

    def hook(m, inputs, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):  # each output element: in/groups × kh × kw multiply-adds
            total += out.numel() * m.weight[0].numel()
        elif isinstance(m, nn.RNNBase):  # the RNN baseline: every weight matrix once per step
            steps = out[0].shape[1 if m.batch_first else 0]
            total += steps * sum(p.numel() for n, p in m.named_parameters() if n.startswith("weight"))
        else:
            total += out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear, nn.RNNBase))]
    training = module.training
    try:
        module.eval()
        with torch.no_grad():
            out = module(image)
    finally:
        module.train(training)
        for h in handles:
            h.remove()
    return total, out


def vit_macs(model: nn.Module, img_size: int | tuple[int, int] | None = None) -> dict[str, int]:
    """Forward multiply-adds per image of a vitlab VisionTransformer, by layer kind.

    Keys: embed, qkv, attn_qk, attn_av, attn_rel, proj, mlp, head (matmuls) and norm
    (LayerNorm, 5 FLOPs per element counted as MACs, as fvcore does; not a matmul)."""
    from .models.embed import PatchEmbed
    from .models.pos_embed import Relative

    embed = model.embed
    if img_size is None:
        if not isinstance(embed, PatchEmbed):
            raise ValueError("img_size is needed to count a CNN stem's FLOPs")
        H, W = (g * embed.patch_size for g in embed.grid)
    else:
        H, W = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    if isinstance(embed, PatchEmbed):
        P = embed.patch_size
        grid = (H // P, W // P)
        k = embed.proj.weight[0].numel()
        macs = {"embed": grid[0] * grid[1] * k * embed.proj.out_channels}
    else:  # a CNN stem (hybrid): count its layers from the shapes of one dummy image
        p = next(embed.parameters())
        # never a bare next(): a StopIteration raised in a callback ends Lightning's epoch early
        conv = next((m for m in embed.modules() if isinstance(m, nn.Conv2d)), None)
        chans = getattr(embed, "in_chans", None) or getattr(conv, "in_channels", None)
        if chans is None:
            raise ValueError(f"cannot tell the input channels of {type(embed).__name__}")
        image = torch.zeros(1, chans, H, W, device=p.device, dtype=p.dtype)
        macs_embed, (_, grid) = _cnn_macs(embed, image)
        macs = {"embed": macs_embed}
    n_patches = grid[0] * grid[1]
    N = n_patches + model.num_prefix
    D = model.embed_dim
    # Shaw keys: q·a over the patch pairs, or over all token pairs with class-token entries
    rel = 0
    if isinstance(model.pos_embed, Relative):
        rel = N if model.pos_embed.cls is not None else n_patches
    for key in ("qkv", "attn_qk", "attn_av", "attn_rel", "proj", "mlp", "norm"):
        macs[key] = 0
    for block in model.blocks:
        attn = block.attn  # GPSA (models/gpsa.py) projects q, k and v apart
        macs["qkv"] += sum(_linear(m, N) for m in ([attn.qkv] if hasattr(attn, "qkv") else [attn.qk, attn.v]))
        macs["attn_qk"] += N * N * D
        macs["attn_av"] += N * N * D
        macs["attn_rel"] += rel * rel * D
        macs["proj"] += _linear(block.attn.proj, N)
        macs["mlp"] += _linear(block.mlp.fc1, N) + _linear(block.mlp.fc2, N)
        macs["norm"] += 2 * 5 * N * D
    macs["norm"] += 5 * N * D  # the final norm
    macs["head"] = _linear(model.head, 1) if isinstance(model.head, nn.Linear) else 0
    return macs


def layer_macs(model: nn.Module, img_size: int | tuple[int, int] | None = None) -> int:
    """Forward multiply-adds per image of a model without attention (the MLP, CNN and RNN
    baselines): every Conv2d, Linear and recurrent layer, from the shapes of one blank image."""
    size = img_size if img_size is not None else getattr(model, "img_size", None)
    if size is None:
        raise ValueError(f"img_size is needed to count the FLOPs of {type(model).__name__}")
    H, W = (size, size) if isinstance(size, int) else tuple(size)
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
    chans = getattr(model, "in_chans", None) or getattr(first, "in_channels", None)
    if chans is None:
        raise ValueError(f"cannot tell the input channels of {type(model).__name__}")
    p = next(model.parameters())
    return _cnn_macs(model, torch.zeros(1, chans, H, W, device=p.device, dtype=p.dtype))[0]


def matmul_macs(model: nn.Module, img_size=None) -> int:
    """Forward multiply-adds per image in matmuls and convolutions (what MFU counts)."""
    if not (hasattr(model, "embed") and hasattr(model, "blocks")):  # not a ViT: count its layers as they run
        return layer_macs(model, img_size)
    return sum(v for k, v in vit_macs(model, img_size).items() if k != "norm")


def forward_flops(model: nn.Module, img_size=None) -> int:
    return 2 * matmul_macs(model, img_size)


def train_flops(model: nn.Module, img_size=None) -> int:
    """Forward + backward (2 × forward) per image."""
    return 3 * forward_flops(model, img_size)


# dense (no sparsity) peak TFLOP/s by device-name substring, checked in order; tf32 is what fp32
# matmuls run at with torch.set_float32_matmul_precision("high")
PEAKS = [  # name, bf16, tf32, fp32
    ("H200", 989.4, 494.7, 66.9),
    ("H100 PCIe", 756.0, 378.0, 51.2),
    ("H100", 989.4, 494.7, 66.9),  # SXM
    ("GH200", 989.4, 494.7, 66.9),
    ("B200", 2250.0, 1100.0, 80.0),
    ("A100", 312.0, 156.0, 19.5),
    ("A800", 312.0, 156.0, 19.5),
    ("L40S", 362.0, 183.0, 91.6),
    ("L4", 121.0, 60.0, 30.3),
    ("A10G", 70.0, 35.0, 31.2),
    ("A10", 125.0, 62.5, 31.2),
    ("RTX 4090", 165.2, 82.6, 82.6),
    ("RTX 3090", 71.0, 35.6, 35.6),
    ("V100", None, None, 15.7),  # no bf16 tensor cores
    ("T4", None, None, 8.1),
]


def cpu_peak_tflops() -> tuple[float, str]:
    """Rough fp32 peak of the CPU cores torch uses: threads × GHz × FLOPs per cycle (two FMA
    units: 32 with AVX2, 64 with AVX-512). An estimate: SMT siblings and clocks may lie."""
    flags, mhz = "", 0.0
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = line
            elif line.startswith("cpu MHz") and not mhz:
                mhz = float(line.split(":")[1])
    per_cycle = 64 if "avx512f" in flags else 32 if "avx2" in flags else 16
    threads = torch.get_num_threads()
    ghz = mhz / 1000 or 2.5
    return threads * ghz * per_cycle / 1000, (f"CPU estimate: {threads} threads x {ghz:.2f} GHz x "
                                             f"{per_cycle} FLOP/cycle")


def peak_tflops(device: torch.device | str, precision: str = "bf16",
                cpu_estimate: bool = False) -> tuple[float | None, str]:
    """(peak TFLOP/s or None, where it came from) for a device at `precision` (anything
    containing "bf16", else fp32: TF32 when the matmul precision allows it). CPUs have no
    table: None unless `cpu_estimate`. The env variable VITLAB_PEAK_TFLOPS overrides all."""
    if os.environ.get("VITLAB_PEAK_TFLOPS"):
        return float(os.environ["VITLAB_PEAK_TFLOPS"]), "VITLAB_PEAK_TFLOPS"
    device = torch.device(device)
    if device.type != "cuda":
        return cpu_peak_tflops() if cpu_estimate else (None, "CPU: no peak table")
    name = torch.cuda.get_device_name(device)
    if "bf16" in str(precision):
        col = 0
    else:
        col = 2 if torch.get_float32_matmul_precision() == "highest" else 1
    for key, *peaks in PEAKS:
        if key in name and peaks[col] is not None:
            return peaks[col], f"{name} {('bf16', 'tf32', 'fp32')[col]} dense peak (table)"
    return None, f"{name} at {precision}: not in the peak table (pass peak_tflops=)"
