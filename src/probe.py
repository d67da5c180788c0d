"""Bias probes of a trained run: `python src/probe.py ckpt_path=<run folder | .ckpt>`.

Translation, patch shuffle, occlusion and layer CKA (conf/probes/default.yaml) on the first
probes.images images of the run's test split; the results go to this command's summary.json
(key `probes`) and are printed."""

import json
import sys
import time
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from vitlab.analysis.probes.run import first_images, run_probes
from vitlab.cli import check_command_line
from vitlab.errors import ConfigError, run_or_exit
from vitlab.run_folder import checkpoint_of, load_model
from vitlab.summary import write_summary


def probe(cfg: DictConfig) -> dict:
    if cfg.split not in ("val", "test"):
        raise ConfigError(f"split={cfg.split!r} must be test or val")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device={cfg.device!r} must be auto, cpu or cuda")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    run_cfg, model = load_model(cfg.ckpt_path)
    datamodule = instantiate(run_cfg.data, batch_size=cfg.probes.batch_size)
    datamodule.setup(cfg.split)
    loader = datamodule.test_dataloader() if cfg.split == "test" else datamodule.val_dataloader()
    batches = first_images(loader, cfg.probes.images)
    t0 = time.time()
    results = run_probes(model.to(device), batches, cfg.probes)
    write_summary(Path(cfg.paths.output_dir), {
        "status": "completed", "ckpt_path": str(checkpoint_of(cfg.ckpt_path)), "split": cfg.split,
        "images": sum(len(y) for _, y in batches), "probe_time_s": round(time.time() - t0, 2),
        "probes": results})
    return results


@hydra.main(version_base="1.3", config_path="../conf", config_name="probe")
def main(cfg: DictConfig) -> None:
    results = run_or_exit(probe, cfg)
    for name, values in results.items():
        if name != "cka":
            print(f"{name}: " + json.dumps({k: round(v, 4) for k, v in values.items()}))
    if "cka" in results:
        print(f"cka: {len(results['cka']['layers'])} x {len(results['cka']['layers'])} layers")
    print(f"summary: {Path(cfg.paths.output_dir) / 'summary.json'}")


if __name__ == "__main__":
    check_command_line(sys.argv[1:], "probe")  # an unknown preset or key: one line, exit 2
    main()
