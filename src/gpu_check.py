"""Does the GPU path work, and how fast? One command: `make gpu-check` (or `python src/gpu_check.py`).

On one GPU, in a few minutes, each step in its own process with its own time limit:
  bench_eager, bench_compiled  ViT-B/16 bf16 training, vitlab against timm (images/s, MFU, ratio)
  presets                      every model preset x positional variant, a few steps, trainer=gpu
  cifar_crop_flip              vit_lite on CIFAR-10, batch 512, on-device loader, crop + flip,
                               compiled: images/s, MFU, data fraction, host syncs per step, accuracy
  cifar_cudagraphs             the same with compile_mode=reduce-overhead (CUDA graphs)
  cifar_recipe                 experiment=cifar10_pure (strong augmentation on the device), short
  ddp                          trainer=ddp trainer.devices=1: the NCCL path, a few steps
  bench_fit                    vitlab's whole training step against a bare PyTorch loop
  bench_path                   the default run's step on each real data path (DataLoader with 0 and
                               2 workers, on-device, streaming) against a bare loop over the same loader
  (autotune=true adds bench_autotune, compile_mode=max-autotune, and bench_cudnn, cuDNN attention)
It prints one table and writes it as JSON. Without a CUDA device it says so and exits 2;
`dry=true` runs every step at toy sizes on the CPU. Only the torch API of 2.11 is used here and
in what it runs, so it works on a machine whose torch is older than this project's pin.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
SMALL_IMAGES = {"vit_micro", "vit_lite", "vit_hybrid", "vit_hybrid_lite", "cct_7_3x1", "sl_vit"}  # 32 px
# ConViT's class token joins after its GPSA blocks: the variants that act inside attention (whose token
# count would change there) are refused by the model, by design, so they are not tried with it
LATE_CLASS_TOKEN = {"convit_tiny"}
IN_ATTENTION = {"relative", "relative_bias", "rope_2d"}
NO_FIGURES = ["~callbacks.attention", "~callbacks.confusion_matrix", "~callbacks.pos_similarity"]
QUIET = ["trainer.enable_progress_bar=false", *NO_FIGURES]
NO_CHECKPOINTS = ["~callbacks.model_checkpoint", "~callbacks.last_checkpoint"]  # a few steps: nothing to keep
ENV = {**os.environ, "HYDRA_FULL_ERROR": "1", "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


@dataclass
class Result:
    name: str
    status: str = "ok"  # ok | FAILED | timeout | skipped
    seconds: float = 0.0
    figures: dict = field(default_factory=dict)
    note: str = ""


def presets(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


def run(cmd: list[str], timeout: float, log: Path) -> tuple[str, str]:
    """Run one command; (status, last lines of its output). Its whole output goes to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        f.write(" ".join(cmd) + "\n\n")
        f.flush()
        try:
            done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout, env=ENV,
                                  cwd=ROOT)
            status = "ok" if done.returncode == 0 else "FAILED"
        except subprocess.TimeoutExpired:
            status = "timeout"
    return status, "\n".join(log.read_text().splitlines()[-15:])


def py(script: str, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "src" / script), *args]


class Check:
    def __init__(self, cfg: DictConfig, work: Path):
        self.cfg, self.work, self.dry = cfg, work, bool(cfg.dry)

    # ---- benchmarks: vitlab against timm, and vitlab against a bare loop

    def bench(self, name: str, *extra: str) -> Result:
        out = self.work / f"{name}.json"
        size = (["model=vit_micro", "model.depth=2", "batch_size=4", "warmup=1", "rounds=2", "steps=1"]
                if self.dry else ["model=vit_base", "img_size=224", "batch_size=256"])
        status, tail = run(py("bench.py", *size, "precision=bf16", "mode=train", f"out={out}", *extra),
                           self.cfg.timeouts.get(name, 300), self.work / f"{name}.log")
        if status != "ok":
            return Result(name, status, note=tail)
        r = json.loads(out.read_text())["train"]
        ours, timm = r["vitlab"], r["timm"]
        return Result(name, figures={
            "vitlab_img_s": round(ours["images_per_s"], 1), "timm_img_s": round(timm["images_per_s"], 1),
            "ratio": round(r["ratio"], 3), "vitlab_mfu": rounded(ours["mfu"]),
            "timm_mfu": rounded(timm["mfu"])})

    def bench_fit(self) -> Result:
        out = self.work / "bench_fit.json"
        size = (["model=vit_micro", "batch_size=16", "warmup=1", "rounds=2", "steps=2"] if self.dry else
                ["model=vit_lite", "batch_size=512", "compile=true", "rounds=3", "steps=30", "warmup=10"])
        status, tail = run(py("bench.py", "mode=fit", "precision=bf16", *size, f"out={out}"),
                           self.cfg.timeouts.bench_fit, self.work / "bench_fit.log")
        if status != "ok":
            return Result("bench_fit", status, note=tail)
        r = json.loads(out.read_text())
        return Result("bench_fit", figures={"vitlab_img_s": round(r["vitlab"]["images_per_s"], 1),
                                            "bare_img_s": round(r["bare"]["images_per_s"], 1),
                                            "ratio": round(r["ratio"], 3)})

    def bench_path(self) -> Result:
        out = self.work / "bench_path.json"
        size = ["rounds=1", "steps=2", "warmup=1"] if self.dry else ["rounds=3", "steps=40", "warmup=10"]
        status, tail = run(py("bench.py", "mode=path", *size, f"out={out}"),
                           self.cfg.timeouts.bench_path, self.work / "bench_path.log")
        if status != "ok":
            return Result("bench_path", status, note=tail)
        paths = json.loads(out.read_text())["paths"]
        return Result("bench_path", figures={f"{name}_ratio": round(row["ratio"], 3)
                                             for name, row in paths.items() if "ratio" in row},
                      note="; ".join(f"{name} skipped: {row['skipped']}"
                                     for name, row in paths.items() if "skipped" in row))

    # ---- every preset x positional variant trains a few steps

    def presets(self) -> Result:
        models, variants = presets("model"), presets("model/pos_embed")
        late = sorted(LATE_CLASS_TOKEN & set(models))
        baselines = [m for m in models if not is_vit(m)]
        models = [m for m in models if m not in late and m not in baselines]
        if self.dry:  # toy sizes on a CPU: every preset once, every variant on one preset
            sweeps = [(models, ["learned_1d"], 64, 1), (late, ["learned_1d"], 64, 2),
                      (["vit_micro"], variants, 64, 1)]
        else:  # the product, in `parallel` processes sharing the GPU, each preset at its image size
            n = max(1, self.cfg.parallel)
            sweeps = [(ms, variants, size, None) for i in range(n)
                      for size, ms in by_image_size(models[i::n]) if ms]
            sweeps += [(late, [v for v in variants if v not in IN_ATTENTION], 224, None)]
        sweeps += [(baselines, [], 32, None)]
        sweeps = [s for s in sweeps if s[0]]
        t0, status = time.time(), "ok"
        procs = [self.sweep(i, *s) for i, s in enumerate(sweeps)]
        for proc, log in procs:
            try:
                proc.wait(timeout=max(1.0, self.cfg.timeouts.presets - (time.time() - t0)))
            except subprocess.TimeoutExpired:
                proc.kill()
                status = "timeout"
            log.close()
        done, failed = 0, []
        for summary in sorted(self.work.glob("presets_*/*/summary.json")):
            s = json.loads(summary.read_text())
            if s.get("status") == "completed":
                done += 1
            else:
                job = (summary.parent / ".hydra" / "overrides.yaml").read_text().split("\n")[:2]
                failed.append(f"{' '.join(o.strip('- ') for o in job)}: {s.get('error', '?')[:150]}")
        expected = sum(len(s[0]) * max(1, len(s[1])) for s in sweeps)
        if status == "ok" and (failed or done < expected):
            status = "FAILED"
        return Result("presets", status, figures={"completed": done, "of": expected},
                      note="\n".join(failed[:10]))

    def sweep(self, i: int, models: list[str], variants: list[str], img_size: int, depth: int | None):
        """One multirun of models x variants, a few steps each, as a background process; `depth`:
        the toy depth of a dry run (2 where a class token joins after block 0)."""
        vit = self.dry and variants  # toy ViT sizes; the baselines keep theirs
        toy = ["model.embed_dim=32", f"model.depth={depth}", "model.num_heads=2"] if vit else []
        if self.dry and variants and depth > 1:
            toy.append("model.attention.local_blocks=1")  # GPSA, then the class token, then a block
        variant = [f"model/pos_embed={','.join(variants)}"] if variants else []  # baselines: none
        cmd = py("train.py", "-m", f"model={','.join(models)}", *variant,
                 "data=fake", f"data.img_size={img_size}", "data.batch_size=8", "+trainer.max_steps=3",
                 "+trainer.limit_val_batches=1", "test=false", self.trainer(), *toy, *QUIET, *NO_CHECKPOINTS,
                 f"hydra.sweep.dir={self.work / f'presets_{i}'}")
        log = open(self.work / f"presets_{i}.log", "w")
        log.write(" ".join(cmd) + "\n\n")
        log.flush()
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=ENV, cwd=ROOT), log

    def trainer(self) -> str:
        return "trainer=cpu" if self.dry else "trainer=gpu"

    # ---- CIFAR-10 runs

    def cifar_data(self) -> list[str] | None:
        """Overrides that point the run at CIFAR-10 (a zip is extracted once), or None."""
        if self.dry:
            return ["data=imagefolder", f"data.data_dir={self.tiny_folder()}", "data.num_classes=10",
                    "data.img_size=32", f"data.cache_dir={self.work / 'cache'}"]
        src = Path(str(self.cfg.cifar or "")).expanduser()
        if not self.cfg.cifar or not src.exists():
            return None
        if src.suffix == ".zip":
            target = self.work / "cifar"
            if not (target / "cifar10").is_dir():
                zipfile.ZipFile(src).extractall(target)
            src = target / "cifar10"
        if (src / "cifar-10-batches-py").is_dir():
            return ["data=cifar10", f"data.data_dir={src}"]
        return ["data=imagefolder", f"data.data_dir={src}", "data.num_classes=10", "data.img_size=32",
                f"data.cache_dir={self.work / 'cache'}"]

    def tiny_folder(self) -> Path:
        from PIL import Image

        root = self.work / "tiny_cifar"
        for split, n in (("train", 8), ("test", 2)):
            for c in range(10):
                (root / split / f"c{c}").mkdir(parents=True, exist_ok=True)
                for i in range(n):
                    image = Image.new("RGB", (32, 32), (25 * c, 30 * i, 128))
                    image.save(root / split / f"c{c}" / f"{i}.jpg")
        return root

    def cifar(self, name: str, *extra: str) -> Result:
        data = self.cifar_data()
        if data is None:
            return Result(name, "skipped", note=f"no CIFAR-10 at cifar={self.cfg.cifar}; pass "
                                                f"cifar=<cifar10-jpg.zip or a CIFAR-10 folder>")
        run_dir = self.work / name
        if self.dry:
            size = ["data.batch_size=16", "trainer.max_epochs=1", "compile=false",
                    "trainer.log_every_n_steps=1", "+callbacks.host_syncs.start=1",
                    "+callbacks.host_syncs.steps=2"]
        else:
            size = ["data.batch_size=512", f"trainer.max_epochs={self.cfg.cifar_epochs}",
                    "trainer.log_every_n_steps=50"]
        status, tail = run(py("train.py", *extra, *data, self.trainer(), "data.on_device=true",
                              "+callbacks.host_syncs._target_=vitlab.callbacks.host_syncs.HostSyncs",
                              *size, *QUIET, f"hydra.run.dir={run_dir}"),
                           self.cfg.timeouts.get(name, 240), self.work / f"{name}.log")
        if status != "ok":
            return Result(name, status, note=tail)
        return Result(name, figures=run_figures(run_dir))

    def ddp(self) -> Result:
        run_dir = self.work / "ddp"
        device = ["trainer.accelerator=cpu", "trainer.precision=32-true"] if self.dry else []
        cmd = py("train.py", "trainer=ddp", "trainer.devices=1", *device, "data=fake", "data.batch_size=32",
                 "+trainer.max_steps=5", "trainer.max_epochs=1", "test=false", *QUIET, *NO_CHECKPOINTS,
                 f"hydra.run.dir={run_dir}")
        status, tail = run(cmd, self.cfg.timeouts.ddp, self.work / "ddp.log")
        if status != "ok":
            return Result("ddp", status, note=tail)
        s = json.loads((run_dir / "summary.json").read_text())
        return Result("ddp", figures={"status": s["status"], "steps": s["global_step"],
                                      "world_size": s["batch"]["world_size"]})


def rounded(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def is_vit(preset: str) -> bool:
    """The lecture's baselines (MLP, CNN, RNN, any size) are no ViTs: no positional variants, no toy
    ViT sizes, 32 px. Asked of the class the preset's `_target_` names, followed through the config it
    extends (`- cnn`, `- base@_here_: vit`), not of its name."""
    from omegaconf import OmegaConf

    from vitlab.model_kind import target_class

    path = ROOT / "conf" / "model" / f"{preset}.yaml"
    while True:
        node = OmegaConf.load(path)
        if "_target_" in node:
            return getattr(target_class(node), "kind", None) == "vit"
        extends = [d if isinstance(d, str) else f"{k.split('@')[0]}/{v}"
                   for d in node.get("defaults", []) if d != "_self_"
                   for k, v in ([(d, None)] if isinstance(d, str) else d.items())
                   if isinstance(d, str) or k.endswith("@_here_")]
        if not extends:
            return False
        path = ROOT / "conf" / "model" / f"{extends[0]}.yaml"


def by_image_size(models: list[str]) -> list[tuple[int, list[str]]]:
    """Presets grouped by the image size they are built for: 32 px ones and 224 px ones."""
    return [(32, [m for m in models if m in SMALL_IMAGES]),
            (224, [m for m in models if m not in SMALL_IMAGES])]


def run_figures(run_dir: Path) -> dict:
    """images/s from the summary; medians of the logged perf/ rows after the first epoch (warm-up,
    compilation); host syncs per step; validation accuracy per epoch; test accuracy."""
    s = json.loads((run_dir / "summary.json").read_text())
    rows = list(csv.DictReader(open(run_dir / "csv" / "metrics.csv")))

    def column(key, after_first_epoch=True):
        values = [float(r[key]) for r in rows if r.get(key)]
        later = [float(r[key]) for r in rows if r.get(key) and r.get("epoch") != "0"]
        return later if after_first_epoch and later else values

    def median(key, after_first_epoch=True):
        values = column(key, after_first_epoch)
        return round(statistics.median(values), 4) if values else None

    return {"img_s": round(s["images_per_sec"] or 0, 1), "data_frac": median("perf/data_frac"),
            "mfu": median("perf/mfu"), "host_syncs_per_step": median("perf/host_syncs_per_step", False),
            "val_acc": [round(v, 4) for v in column("val/acc", False)],
            "test_acc": round(s.get("test", {}).get("test/acc", float("nan")), 4),
            "wall_s": s["wall_time_s"]}


def collect(work: Path, dest: Path, max_bytes: int = 2**22) -> None:
    """The logs, summaries, configs and metrics of the steps (small text files) into `dest`."""
    for f in work.rglob("*"):
        if f.is_file() and f.suffix in (".log", ".json", ".csv", ".yaml") and f.stat().st_size <= max_bytes:
            target = dest / f.relative_to(work)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)


def environment() -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        env |= {"device": torch.cuda.get_device_name(0), "devices": torch.cuda.device_count(),
                "capability": list(torch.cuda.get_device_capability(0)),
                "bf16": torch.cuda.is_bf16_supported()}
    for name in ("lightning", "timm", "torchvision", "hydra", "omegaconf", "kornia", "torchmetrics",
                 "torchao"):
        try:
            env[name] = __import__(name).__version__
        except Exception as error:  # noqa: BLE001 - absent or broken: the table says which
            env[name] = f"missing ({type(error).__name__})"
    return env


def table(results: list[Result]) -> str:
    lines = [f"{'step':18}{'status':9}{'time':>7}  figures"]
    for r in results:
        figs = ", ".join(f"{k}={v}" for k, v in r.figures.items())
        lines.append(f"{r.name:18}{r.status:9}{r.seconds:6.0f}s  {figs}")
        if r.status not in ("ok",) and r.note:
            lines += [f"{'':36}{line}" for line in r.note.splitlines()[-6:]]
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="../conf", config_name="gpu_check")
def main(cfg: DictConfig) -> None:
    if not cfg.dry and not torch.cuda.is_available():
        print("gpu-check needs a CUDA device and found none (torch "
              f"{torch.__version__}); `make gpu-check ARGS=\"dry=true\"` runs every step on the CPU",
              file=sys.stderr)
        sys.exit(2)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    returned = os.environ.get("OUT")  # a lent GPU machine returns what is written there
    default = Path(returned) if returned else ROOT / "outputs" / "gpu_check" / stamp
    out = Path(cfg.out) if cfg.out else default / "gpu_check.json"
    # run folders hold checkpoints and decode caches: keep them out of a folder that is sent back
    work = Path(cfg.work_dir) if cfg.work_dir else (
        Path(tempfile.mkdtemp(prefix="gpu_check_")) if returned else out.parent / "steps")
    work.mkdir(parents=True, exist_ok=True)
    check = Check(cfg, work)
    recipe = ["experiment=cifar10_pure"] + (["trainer=cpu"] if cfg.dry else [])
    plain = ["model=vit_lite", "data/augment=basic", "module.lr_scaling=sqrt", "data.val_fraction=0.02"]
    steps = {
        "bench_eager": lambda: check.bench("bench_eager"),
        "bench_compiled": lambda: check.bench("bench_compiled", "compile=true"),
        "bench_autotune": lambda: check.bench("bench_autotune", "compile=true", "compile_mode=max-autotune"),
        "bench_cudnn": lambda: check.bench("bench_cudnn", "compile=true", "sdpa=cudnn"),
        "presets": check.presets,
        "cifar_crop_flip": lambda: check.cifar("cifar_crop_flip", *plain, "compile=true"),
        "cifar_cudagraphs": lambda: check.cifar("cifar_cudagraphs", *plain, "compile=true",
                                                "compile_mode=reduce-overhead"),
        "cifar_recipe": lambda: check.cifar("cifar_recipe", *recipe),
        "ddp": check.ddp,
        "bench_fit": check.bench_fit,
        "bench_path": check.bench_path,
    }
    if not cfg.autotune:  # minutes of kernel tuning; cuDNN attention needs a recent GPU
        steps.pop("bench_autotune")
        steps.pop("bench_cudnn")
    chosen = [n for n in steps if (not cfg.only or any(o in n for o in cfg.only))
              and not any(s in n for s in cfg.skip)]
    env = environment()
    print(f"gpu-check: {env.get('device', 'CPU (dry run)')}, torch {env['torch']}, CUDA {env['cuda']}; "
          f"steps: {', '.join(chosen)}; logs in {work}", flush=True)
    results = []
    for name in chosen:
        t0 = time.time()
        try:
            result = steps[name]()
        except Exception as error:  # noqa: BLE001 - one broken step must not hide the others
            result = Result(name, "FAILED", note=f"{type(error).__name__}: {error}")
        result.seconds = time.time() - t0
        results.append(result)
        print(table([result]).splitlines()[1], flush=True)
    report = table(results)
    print("\n" + report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"environment": env, "dry": bool(cfg.dry),
                               "steps": [r.__dict__ for r in results]}, indent=2))
    if returned and not cfg.work_dir:
        collect(work, out.parent / "steps")
    print(f"\nwritten: {out}")
    if any(r.status in ("FAILED", "timeout") for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
