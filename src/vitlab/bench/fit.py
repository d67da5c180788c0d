"""The framework's own overhead: vitlab's real training step against a bare PyTorch loop.

`python src/bench.py mode=fit model=vit_micro batch_size=32`. The vitlab side is the training
run `python src/train.py` would build (Trainer, LightningModule, AdamW, clipping, metrics,
logging, throughput and NaN-guard callbacks, the on-device loader), on synthetic data of the
bench's image size. The bare side is a plain loop over the same batches with the same model
(same initialisation), optimiser, schedule, clipping and precision: what the step costs with
no framework at all. Rounds alternate which side runs first; each round times `steps` steps
after `warmup` untimed ones, device-synchronised at both ends. The ratio is bare time / vitlab
time (1.0 = no overhead), the median of the per-round ratios.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time

import lightning as L
import torch
from hydra import compose
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from ..data.on_device import DeviceLoader, as_uint8
from ..objectives.optim import fused_where_possible, param_groups
from ..runs.build_model import build_model
from ..training.train import build

PRECISION = {"32": "32-true", "bf16": "bf16-mixed"}


def train_config(cfg: DictConfig, preset: str, out_dir: str, steps_per_round: int) -> DictConfig:
    """The training config of this bench: the preset on synthetic data that the on-device
    loader holds, validation, test and end-of-run figures off (they are not the step)."""
    accelerator = "gpu" if cfg.device in ("cuda", "gpu") or (
        cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
    overrides = [
        f"model={preset}", "data=fake", "data.on_device=true", f"data.img_size={cfg.img_size}",
        f"data.in_chans={cfg.in_chans}", f"data.num_classes={cfg.num_classes}",
        f"data.batch_size={cfg.batch_size}", f"data.dataset.train_size={cfg.batch_size * steps_per_round}",
        f"trainer.accelerator={accelerator}", f"trainer.precision={PRECISION[str(cfg.precision)]}",
        "+trainer.limit_val_batches=0", "+trainer.num_sanity_val_steps=0", "trainer.max_epochs=-1",
        f"+trainer.max_steps={steps_per_round}", "trainer.enable_progress_bar=false", "test=false",
        f"compile={bool(cfg.compile)}", f"paths.output_dir={out_dir}",
        "~callbacks.attention", "~callbacks.confusion_matrix", "~callbacks.pos_similarity",
        "~callbacks.model_checkpoint", "~callbacks.last_checkpoint",
    ]
    if cfg.compile_mode:
        overrides.append(f"compile_mode={cfg.compile_mode}")
    train_cfg = compose(config_name="train", overrides=overrides + list(cfg.fit_overrides or []))
    with open_dict(train_cfg):
        train_cfg.seed = 0
    return train_cfg


class StepTimer(L.Callback):
    """Wall time from the end of step `warmup` to the end of step `warmup + steps`, counted over
    the run, not within an epoch (a small dataset's epoch may end before them)."""

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps, self.seconds = warmup, steps, None
        self._t0 = 0.0
        self._done = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._done += 1
        if self._done in (self.warmup, self.warmup + self.steps):
            sync(trainer.strategy.root_device)
            now = time.perf_counter()
            if self._done == self.warmup:
                self._t0 = now
            else:
                self.seconds = now - self._t0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def vitlab_round(train_cfg: DictConfig, datamodule, warmup: int, steps: int) -> float:
    """The run's fit, timed; on `datamodule`, or on the run's own when None."""
    L.seed_everything(train_cfg.seed, verbose=False)
    own, module, trainer = build(train_cfg)
    timer = StepTimer(warmup, steps)
    trainer.callbacks.append(timer)
    trainer.fit(module, datamodule=datamodule or own)
    return timer.seconds


class BareLoop:
    """The same training step with nothing around it."""

    def __init__(self, train_cfg: DictConfig, device: torch.device, total_steps: int):
        L.seed_everything(train_cfg.seed, verbose=False)
        self.model = build_model(train_cfg.model, pretrained=False).to(device)
        if train_cfg.get("compile"):
            self.model.compile(mode=train_cfg.get("compile_mode"))
        m = train_cfg.module
        factory = fused_where_possible(instantiate(m.optimizer), device)  # as train.build does
        self.opt = factory(param_groups(self.model, m.weight_decay))
        floor = m.min_lr_ratio
        self.sched = LambdaLR(self.opt, lambda s: floor + (1 - floor) * 0.5 * (
            1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
        self.loss = nn.CrossEntropyLoss(label_smoothing=m.label_smoothing)
        self.clip = train_cfg.trainer.gradient_clip_val
        self.bf16 = "bf16" in str(train_cfg.trainer.precision)
        self.device = device

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.loss(self.model(x), y)
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)

    def round(self, loader: DeviceLoader, warmup: int, steps: int) -> float:
        self.model.train()
        t0 = 0.0
        for i, (x, y) in enumerate(loader, start=1):
            self.step(x, y)
            if i == warmup:
                sync(self.device)
                t0 = time.perf_counter()
            elif i == warmup + steps:
                sync(self.device)
                return time.perf_counter() - t0
        raise RuntimeError("the loader ran out of batches before the timed steps ended")


def run_fit(cfg: DictConfig, preset: str) -> dict:
    warmup, steps = max(1, cfg.warmup), cfg.steps
    per_round = warmup + steps + 1
    with tempfile.TemporaryDirectory(prefix="vitlab-bench-fit-") as out:
        train_cfg = train_config(cfg, preset, out, per_round)
        datamodule = instantiate(train_cfg.data, batch_size=cfg.batch_size)
        datamodule.setup("fit")
        device = torch.device("cuda" if train_cfg.trainer.accelerator == "gpu" else "cpu")
        images, labels = as_uint8(datamodule.splits["train"].dataset)
        loader = DeviceLoader(images.to(device), labels, cfg.batch_size, datamodule.mean,
                              datamodule.std, shuffle=True, seed=0)
        bare = BareLoop(train_cfg, device, total_steps=per_round)
        times = {"vitlab": [], "bare": []}
        for r in range(cfg.rounds):
            for side in ("vitlab", "bare") if r % 2 == 0 else ("bare", "vitlab"):
                seconds = vitlab_round(train_cfg, datamodule, warmup, steps) if side == "vitlab" \
                    else bare.round(loader, warmup, steps)
                times[side].append(seconds)
    result = {"preset": preset, "mode": "fit", "img_size": cfg.img_size, "batch_size": cfg.batch_size,
              "precision": str(cfg.precision), "device": str(device), "compile": bool(cfg.compile),
              "warmup": warmup, "steps": steps, "rounds": cfg.rounds, "torch": torch.__version__,
              "lightning": L.__version__}
    for side, t in times.items():
        sec = statistics.median(t)
        result[side] = {"images_per_s": cfg.batch_size * steps / sec, "step_ms": sec / steps * 1e3,
                        "rounds_ms": [round(s / steps * 1e3, 3) for s in t]}
    result["ratio"] = statistics.median(b / v for v, b in zip(times["vitlab"], times["bare"], strict=True))
    return result


def report_fit(r: dict) -> str:
    lines = [f"{r['preset']} at {r['img_size']} px, batch {r['batch_size']}, precision {r['precision']}, "
             f"{r['device']}, compile={r['compile']}: {r['rounds']} rounds of {r['steps']} steps "
             f"after {r['warmup']} warm-up steps",
             f"{'':22}{'images/s':>10}{'step ms':>10}"]
    for side, label in (("vitlab", "vitlab (Trainer fit)"), ("bare", "bare PyTorch loop")):
        lines.append(f"{label:22}{r[side]['images_per_s']:10.1f}{r[side]['step_ms']:10.2f}")
    lines.append(f"fit ratio vitlab/bare (bare = 1.0): {r['ratio']:.3f} (median of per-round ratios)")
    return "\n".join(lines)
