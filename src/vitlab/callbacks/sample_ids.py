"""Which images each rank trained on, batch by batch: a data audit (`data.return_ids=true`).

  python src/train.py data=streaming data.return_ids=true \
      +callbacks.sample_ids._target_=vitlab.callbacks.sample_ids.SampleIds

writes `<run folder>/sample_ids/rank<r>.jsonl`, one line per training batch:
{"epoch": e, "batch": i, "ids": [...]}, appended and flushed at once, so an interrupted and
resumed run keeps one log: each sample once per epoch over the ranks, resumes without a gap.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L


class SampleIds(L.Callback):
    def __init__(self, dirpath: str | None = None):
        self.dirpath = dirpath  # default: <run folder>/sample_ids

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if len(batch) < 3:
            return  # batches without ids (data.return_ids=false)
        folder = Path(self.dirpath or Path(trainer.default_root_dir) / "sample_ids")
        folder.mkdir(parents=True, exist_ok=True)
        line = {"epoch": trainer.current_epoch, "batch": batch_idx, "ids": batch[2].tolist()}
        with open(folder / f"rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")


def read_sample_ids(folder: str | Path) -> dict[int, list[dict]]:
    """rank -> its lines, in the order written."""
    return {int(p.stem[4:]): [json.loads(line) for line in p.read_text().splitlines()]
            for p in sorted(Path(folder).glob("rank*.jsonl"))}
