"""Data-loader throughput: images/s of the training loader for each `num_workers`.

  python src/bench_data.py data=imagefolder data.data_dir=data/cifar10 data.num_classes=10 data.img_size=32
  python src/bench_data.py data=digits data.on_device=true workers=[0]

The first batch (worker start-up, first reads) is not timed. Only the loader runs: what a
training step would wait for if the model took no time.
"""

from __future__ import annotations

import time

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench_data")
def main(cfg: DictConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    kind = "on-device loader" if cfg.data.get("on_device") else "DataLoader"
    print(f"{kind}, batch {cfg.data.batch_size}, {cfg.data.img_size} px, "
          f"augment: {', '.join(cfg.data.get('augment') or {}) or 'none'}, {torch.get_num_threads()} threads")
    for workers in cfg.workers:
        datamodule = instantiate(cfg.data, num_workers=workers)
        datamodule.setup("fit")
        batches = iter(datamodule.train_dataloader())
        next(batches)
        start, images = time.perf_counter(), 0
        for _, (x, _) in zip(range(cfg.batches), batches, strict=False):
            images += x.shape[0]
        seconds = time.perf_counter() - start
        print(f"num_workers={workers}: {images / seconds:8.0f} images/s  "
              f"({images} images in {seconds:.1f} s)")
        del batches  # stop this setting's workers before the next


if __name__ == "__main__":
    main()
