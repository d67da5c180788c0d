"""Bias probes of a trained run: `python src/probe.py ckpt_path=<run folder | .ckpt>`.

Translation, patch shuffle, occlusion and layer CKA (conf/probes/default.yaml) on the first
probes.images images of the run's test split; the results go to this command's summary.json
(key `probes`) and are printed. `probes.cka_against=<run B>` adds the CKA of this run's layers
against run B's on the same images (`probes.cka_between`, Raghu et al.'s cross-model heatmap)."""

import json
import sys
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from vitlab.analysis.probes.cka import cross_cka_matrix
from vitlab.analysis.probes.run import probe_images, probe_summary
from vitlab.cli import check_command_line
from vitlab.errors import ConfigError, run_or_exit
from vitlab.runs.run_folder import checkpoint_of, load_model
from vitlab.runs.summary import write_summary


def probe(cfg: DictConfig) -> dict:
    if cfg.split not in ("val", "test"):
        raise ConfigError(f"split={cfg.split!r} must be test or val")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device={cfg.device!r} must be auto, cpu or cuda")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    run_cfg, model = load_model(cfg.ckpt_path)
    other = load_model(cfg.probes.cka_against)[1] if cfg.probes.get("cka_against") else None
    datamodule = instantiate(run_cfg.data, batch_size=cfg.probes.batch_size)
    datamodule.setup(cfg.split)
    loader = datamodule.test_dataloader() if cfg.split == "test" else datamodule.val_dataloader()
    values = probe_summary(model, loader, cfg.probes, device, run_cfg.data.get("mean"),
                           run_cfg.data.get("std"))
    if other is not None:  # the same images, spread over the split, through both runs
        batches = probe_images(loader, cfg.probes.cka_images, cfg.probes.batch_size)
        rows, cols, matrix = cross_cka_matrix(model, other.to(device), batches, cfg.probes.cka_images)
        values["probes"]["cka_between"] = {"against": str(checkpoint_of(cfg.probes.cka_against)),
                                           "layers": rows, "other_layers": cols,
                                           "matrix": [[round(v, 4) for v in row] for row in matrix]}
    write_summary(Path(cfg.paths.output_dir), {
        "status": "completed", "ckpt_path": str(checkpoint_of(cfg.ckpt_path)), "split": cfg.split,
        "images": values["probe_images"], **values})
    return values["probes"]


@hydra.main(version_base="1.3", config_path="../conf", config_name="probe")
def main(cfg: DictConfig) -> None:
    results = run_or_exit(probe, cfg)
    for name, values in results.items():
        if name in ("cka", "cka_between"):
            rows, cols = values["layers"], values.get("other_layers", values["layers"])
            print(f"{name}: {len(rows)} x {len(cols)} layers")
        elif isinstance(values, dict):
            print(f"{name}: " + json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                            for k, v in values.items()}))
        elif isinstance(values, float):
            print(f"{name}: {values:.4f}")
        else:  # the probes' settings, e.g. fill: black
            print(f"{name}: {values}")
    print(f"summary: {Path(cfg.paths.output_dir) / 'summary.json'}")


if __name__ == "__main__":
    check_command_line(sys.argv[1:], "probe")  # an unknown preset or key: one line, exit 2
    main()
