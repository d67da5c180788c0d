"""Data-loader throughput: images/s of the training loader for each `num_workers`.

  python src/bench_data.py data=imagefolder data.data_dir=data/cifar10 data.num_classes=10 data.img_size=32
  python src/bench_data.py data=digits data.on_device=true workers=[0]

With `compare.sizes` set, the same image folder is read three ways, side by side, at each size:
the image-folder DataLoader, streaming from litdata shards (written once into
`compare.shards_dir` by vitlab.data.shards) and the decode cache (data.on_device=true on the
CPU: the folder decoded once to uint8, augmented in batches), with images/s per core and the
ratio to the image folder (the median of `compare.repeats` turns):

  python src/bench_data.py data=imagefolder data.data_dir=data/cifar10 data.num_classes=10 \\
      compare.sizes=[32,224] workers=[2]

The first batch (worker start-up, first reads) is not timed. Only the loader runs: what a
training step would wait for if the model took no time.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import hydra
import torch
import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

SOURCES = ("imagefolder", "streaming", "decode_cache")


def images_per_sec(datamodule, batches: int) -> tuple[float, int, float]:
    """(images/s, images, seconds) over `batches` batches after the first."""
    datamodule.setup("fit")
    loader = iter(datamodule.train_dataloader())
    next(loader)
    start, images = time.perf_counter(), 0
    for _, batch in zip(range(batches), loader, strict=False):
        images += batch[0].shape[0]
    seconds = time.perf_counter() - start
    del loader  # stop the workers before the next setting
    return images / seconds, images, seconds


def source_datamodule(cfg: DictConfig, source: str, size: int, workers: int):
    """The data module reading cfg.data's image folder the `source` way, at `size` px."""
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    cfg.data.update(img_size=size, num_workers=workers, on_device=source == "decode_cache")
    if source == "streaming":
        cfg.data.update(_target_="vitlab.data.streaming.StreamingDataModule", input_dir=shards_dir(cfg))
    return instantiate(cfg.data)  # ${data.img_size} (the crop, resize) follows the size


def shards_dir(cfg: DictConfig) -> str:
    return str(Path(cfg.compare.shards_dir).expanduser() / Path(cfg.data.data_dir).resolve().name)


def compare(cfg: DictConfig) -> None:
    from vitlab.data.shards import convert

    convert(cfg.data.data_dir, shards_dir(cfg), verbose=False)  # once: nothing when up to date
    threads = torch.get_num_threads()
    out = Path(cfg.compare.out_dir) if cfg.compare.out_dir else None
    print("| size | source | workers | images/s | cores | images/s per core | vs image folder |")
    print("|---|---|---|---|---|---|---|")
    for size in cfg.compare.sizes:
        for workers in cfg.workers:
            # the sources take turns, `repeats` times: a shared machine's load hits them alike
            runs = {source: [] for source in cfg.compare.sources}
            for _ in range(cfg.compare.repeats):
                for source in cfg.compare.sources:
                    runs[source].append(images_per_sec(source_datamodule(cfg, source, size, workers),
                                                       cfg.batches))
            medians = {source: statistics.median(r[0] for r in measured) for source, measured in runs.items()}
            base = medians.get("imagefolder")
            for source, measured in runs.items():
                speed = medians[source]
                # the decode cache augments in the main process's threads; loaders in their workers
                cores = threads if source == "decode_cache" else max(1, workers)
                ratio = speed / base if base else None
                print(f"| {size} | {source} | {workers} | {speed:,.0f} | {cores} | {speed / cores:,.0f} | "
                      + (f"{ratio:.2f}x |" if ratio else "— |"), flush=True)
                if out:
                    job = out / f"{size}px-{source}-w{workers}"
                    (job / ".hydra").mkdir(parents=True, exist_ok=True)
                    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(
                        [f"source={source}", f"data.img_size={size}", f"workers={workers}"]))
                    (job / "summary.json").write_text(json.dumps({
                        "status": "completed", "images_per_sec": speed, "cores": cores,
                        "images_per_sec_per_core": speed / cores, "ratio_to_imagefolder": ratio,
                        "repeats": [round(r[0], 1) for r in measured], "images": measured[0][1]}, indent=1))


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench_data")
def main(cfg: DictConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.compare.sizes:
        return compare(cfg)
    kind = "on-device loader" if cfg.data.get("on_device") else "DataLoader"
    print(f"{kind}, batch {cfg.data.batch_size}, {cfg.data.img_size} px, "
          f"augment: {', '.join(cfg.data.get('augment') or {}) or 'none'}, {torch.get_num_threads()} threads")
    for workers in cfg.workers:
        datamodule = instantiate(cfg.data, num_workers=workers)
        speed, images, seconds = images_per_sec(datamodule, cfg.batches)
        print(f"num_workers={workers}: {speed:8.0f} images/s  ({images} images in {seconds:.1f} s)")


if __name__ == "__main__":
    main()
