"""Benchmark vitlab's ViT against timm's of the same configuration, A/B in one process.

  python src/bench.py model=vit_small img_size=224 batch_size=16
  python src/bench.py model=vit_base img_size=224 batch_size=256 precision=bf16 compile=true
  python src/bench.py mode=fit model=vit_micro batch_size=32      # the framework's own overhead

Times training steps (forward, backward, AdamW step) and inference of both models, alternating
which goes first every round after a warm-up, and reports the median round: images/s, the ratio
vitlab/timm, TFLOP/s and MFU (FLOPs counted per layer by vitlab.flops, QKᵀ and AV included;
training = 3 × forward) and peak memory. A measurement, not a test: nothing is asserted.
`mode=fit` instead times vitlab's whole training step against a bare PyTorch loop (vitlab/bench/fit.py),
`mode=path` the default run's step on each of its real data paths against a bare loop over the
same loader (vitlab/bench/path.py):

  python src/bench.py mode=path                  # DataLoader (0 and 2 workers), on-device, streaming
"""

from __future__ import annotations

import contextlib
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import hydra
import timm
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig
from timm.layers.hybrid_embed import HybridEmbed as TimmHybridEmbed
from timm.models.vision_transformer import VisionTransformer as TimmViT
from torch.nn.attention import SDPBackend, sdpa_kernel

from vitlab.bench.fit import report_fit, run_fit
from vitlab.bench.path import report_path, run_path
from vitlab.flops import forward_flops, peak_tflops, train_flops
from vitlab.models.hybrid import create_backbone
from vitlab.runs.build_model import build_model

# process: CPU time of this process, robust to other jobs on a shared machine with threads=1
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}
SMALL_IMAGE_PRESETS = {"vit_micro", "vit_lite", "vit_hybrid", "vit_hybrid_lite"}  # 32 px presets
SDPA = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
NAMED_TIMM = {"vit_hybrid_r50_b16": "vit_base_r50_s16_224", "vit_hybrid_r26_s32": "vit_small_r26_s32_224"}


def build_timm(cfg: DictConfig, preset: str) -> tuple[torch.nn.Module, str]:
    """timm's model of the preset's configuration, and how it was made (printed)."""
    m = cfg.model
    common = dict(img_size=cfg.img_size, in_chans=cfg.in_chans, num_classes=cfg.num_classes,
                  drop_path_rate=m.drop_path_rate)
    name = cfg.timm_model
    if name == "auto" and preset in NAMED_TIMM:
        name = NAMED_TIMM[preset]
    if name != "auto":
        return timm.create_model(name, pretrained=False, **common), f"timm.create_model({name!r})"
    kw = dict(common, embed_dim=m.embed_dim, depth=m.depth, num_heads=m.num_heads, mlp_ratio=m.mlp_ratio,
              qkv_bias=m.qkv_bias, patch_size=m.patch_size, pos_drop_rate=m.drop_rate,
              proj_drop_rate=m.drop_rate, attn_drop_rate=m.attn_drop_rate,
              global_pool="token" if m.pool == "cls" else "avg", class_token=m.pool == "cls")
    how = "timm VisionTransformer, same configuration, learned 1-D positions"
    if m.embed is not None:  # the same CNN stage as vitlab's HybridEmbed, in timm's HybridEmbed
        e = instantiate(m.embed).keywords
        backbone = create_backbone(e["backbone"], e.get("out_index", -1), cfg.in_chans,
                                   **(e.get("backbone_kwargs") or {}))
        kw["embed_layer"] = lambda **a: TimmHybridEmbed(backbone=backbone, **a)
        how += f", timm HybridEmbed on {e['backbone']} stage {e.get('out_index', -1)}"
    return TimmViT(**kw), how


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """One model's training step and inference on a fixed batch."""

    def __init__(self, model, x, y, cfg, device):
        self.model, self.x, self.y, self.device = model, x, y, device
        fused = device.type == "cuda" if cfg.fused_adamw == "auto" else bool(cfg.fused_adamw)
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=fused)
        self.fn = torch.compile(model, mode=cfg.compile_mode) if cfg.compile else model
        bf16 = str(cfg.precision) == "bf16"
        self.autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 \
            else contextlib.nullcontext
        # one SDPA backend for every attention call (and for tracing under compile), or torch's choice
        self.attention = (lambda: sdpa_kernel(SDPA[cfg.sdpa])) if cfg.sdpa != "auto" \
            else contextlib.nullcontext

    def train_step(self):
        with self.autocast(), self.attention():
            loss = F.cross_entropy(self.fn(self.x), self.y)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def infer_step(self):
        with torch.inference_mode(), self.autocast(), self.attention():
            self.fn(self.x)

    def timed(self, step, n: int, clock=time.perf_counter) -> float:
        """Seconds per step over n steps."""
        sync(self.device)
        t = clock()
        for _ in range(n):
            step()
        sync(self.device)
        return (clock() - t) / n


def peak_memory(runner: Runner, device: torch.device) -> float | None:
    """GiB allocated at the peak of one training step, above what was resident before it
    plus this model's own weights, gradients and optimiser state (CUDA only)."""
    if device.type != "cuda":
        return None
    runner.train_step()  # gradients and optimiser state exist from here on
    sync(device)
    own = sum(p.numel() * p.element_size() * 4 for p in runner.model.parameters())  # w, grad, m, v
    base = torch.cuda.memory_allocated(device) - own
    torch.cuda.reset_peak_memory_stats(device)
    runner.train_step()
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**30


def measure(runners: dict[str, Runner], phase: str, cfg) -> dict[str, list[float]]:
    """Seconds per step of each runner, every round, the order alternating between rounds."""
    names = list(runners)
    for name in names:
        (runners[name].model.train if phase == "train" else runners[name].model.eval)()
    times = {n: [] for n in names}
    clock = CLOCKS[cfg.clock]
    for r in range(cfg.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            run = runners[name]
            times[name].append(run.timed(run.train_step if phase == "train" else run.infer_step,
                                         cfg.steps, clock))
    return times


def run(cfg: DictConfig, preset: str) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available()
                          else "cpu" if cfg.device == "auto" else cfg.device)
    if device.type == "cuda":
        torch.set_float32_matmul_precision(cfg.matmul_precision)
    if cfg.channels_last and cfg.model.embed is not None:
        cfg.model.embed.channels_last = True
    torch.manual_seed(0)
    ours = build_model(cfg.model, pretrained=False).to(device)
    torch.manual_seed(0)
    theirs, how = build_timm(cfg, preset)
    theirs = theirs.to(device)
    memory_format = torch.contiguous_format
    if cfg.channels_last and cfg.model.embed is not None:
        theirs.to(memory_format=torch.channels_last)  # 4-D weights only: the CNN stem
        memory_format = torch.channels_last
    x = torch.randn(cfg.batch_size, cfg.in_chans, cfg.img_size, cfg.img_size, device=device)
    x = x.contiguous(memory_format=memory_format)
    y = torch.randint(0, cfg.num_classes, (cfg.batch_size,), device=device)
    runners = {"vitlab": Runner(ours, x, y, cfg, device), "timm": Runner(theirs, x, y, cfg, device)}

    fwd = forward_flops(ours, cfg.img_size)
    flops = {"train": train_flops(ours, cfg.img_size), "infer": fwd}
    if cfg.peak_tflops:
        peak, peak_how = float(cfg.peak_tflops), "peak_tflops="
    else:
        peak, peak_how = peak_tflops(device, str(cfg.precision), cpu_estimate=True)
    params = {n: sum(p.numel() for p in r.model.parameters()) for n, r in runners.items()}
    result = {
        "preset": preset, "timm": how, "img_size": cfg.img_size, "batch_size": cfg.batch_size,
        "precision": str(cfg.precision), "device": str(device), "device_name": device_name(device),
        "threads": torch.get_num_threads(), "compile": bool(cfg.compile), "clock": cfg.clock,
        "compile_mode": cfg.compile_mode, "sdpa": cfg.sdpa,
        "channels_last": bool(cfg.channels_last), "parameters": params,
        "forward_gflop_per_image": fwd / 1e9, "peak_tflops": peak, "peak_source": peak_how,
        "torch": torch.__version__, "timm_version": timm.__version__,
    }
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    phases = ["train", "infer"] if cfg.mode == "both" else [cfg.mode]
    for phase in phases:
        for r in runners.values():  # warm-up: allocation, autotuning, compilation
            (r.model.train if phase == "train" else r.model.eval)()
            for _ in range(cfg.warmup):
                r.train_step() if phase == "train" else r.infer_step()
        if phase == "train":
            result["peak_memory_gib"] = {n: peak_memory(r, device) for n, r in runners.items()}
        times = measure(runners, phase, cfg)
        out = {}
        for name, t in times.items():
            sec = statistics.median(t)
            ips = cfg.batch_size / sec
            tflops = ips * flops[phase] / 1e12
            out[name] = {"images_per_s": ips, "step_ms": sec * 1e3, "tflops": tflops,
                         "mfu": tflops / peak if peak else None,
                         "rounds_ms": [round(s * 1e3, 2) for s in t]}
        # median of the per-round ratios: each round's pair ran back to back, under the same load
        out["ratio"] = statistics.median(b / a for a, b in zip(times["vitlab"], times["timm"], strict=True))
        out["ratio_of_medians"] = out["vitlab"]["images_per_s"] / out["timm"]["images_per_s"]
        result[phase] = out
    result["max_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result["rss_growth_gib"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 2**20
    return result


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "cpu"


def report(r: dict) -> str:
    lines = [
        f"{r['preset']} at {r['img_size']} px, batch {r['batch_size']}, precision {r['precision']}, "
        f"{r['device']} ({r['device_name']}, {r['threads']} threads), compile={r['compile']}, "
        f"clock={r['clock']}",
        f"timm reference: {r['timm']}",
        f"parameters: vitlab {r['parameters']['vitlab']:,}  timm {r['parameters']['timm']:,}",
        f"FLOPs/image: forward {r['forward_gflop_per_image']:.3f} GFLOP, training "
        f"{3 * r['forward_gflop_per_image']:.3f} GFLOP; peak {r['peak_tflops'] or float('nan'):.3f} "
        f"TFLOP/s ({r['peak_source']})",
        f"{'':14}{'images/s':>10}{'step ms':>10}{'TFLOP/s':>10}{'MFU':>8}{'peak mem':>10}",
    ]
    mem = r.get("peak_memory_gib", {})
    for phase in ("train", "infer"):
        if phase not in r:
            continue
        for name in ("vitlab", "timm"):
            m = r[phase][name]
            mfu = f"{100 * m['mfu']:.1f}%" if m["mfu"] is not None else "-"
            gib = mem.get(name) if phase == "train" else None
            lines.append(f"{phase + ' ' + name:14}{m['images_per_s']:10.1f}{m['step_ms']:10.1f}"
                         f"{m['tflops']:10.4f}{mfu:>8}{f'{gib:.2f} GiB' if gib else '-':>10}")
        lines.append(f"{phase} ratio vitlab/timm: {r[phase]['ratio']:.3f} (median of per-round ratios; "
                     f"ratio of medians {r[phase]['ratio_of_medians']:.3f})")
    if r["device"] == "cpu":
        lines.append(f"memory: per-model peaks need CUDA; process max RSS {r['max_rss_gib']:.2f} GiB")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    preset = HydraConfig.get().runtime.choices.get("model", "?")
    if cfg.img_size is None:
        cfg.img_size = 32 if preset in SMALL_IMAGE_PRESETS else 224
    if str(cfg.precision) not in ("32", "bf16") or cfg.mode not in ("train", "infer", "both", "fit", "path") \
            or cfg.clock not in CLOCKS or (cfg.sdpa != "auto" and cfg.sdpa not in SDPA):
        sys.exit(f"error: precision must be 32 or bf16, mode train, infer, both, fit or path, clock wall or "
                 f"process, sdpa auto, {', '.join(SDPA)} (got precision={cfg.precision} mode={cfg.mode} "
                 f"clock={cfg.clock} sdpa={cfg.sdpa})")
    if cfg.mode == "fit":
        result = run_fit(cfg, preset)
        print(report_fit(result))
    elif cfg.mode == "path":
        result = run_path(cfg, preset)
        print(report_path(result))
    else:
        result = run(cfg, preset)
        print(report(result))
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(json.dumps(result, indent=2))
        print(f"results: {cfg.out}")


if __name__ == "__main__":
    main()
