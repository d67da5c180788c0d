"""A run resumed mid-epoch (checkpoints/interrupted.ckpt, SLURM's hpc_ckpt_*.ckpt) continues at
the batch where it stopped, so it ends exactly as the uninterrupted run would.

Lightning builds and starts the training loader inside `configure_optimizers` (the schedule asks
for `trainer.estimated_stepping_batches`), before it restores the loop counters from the
checkpoint: that loader starts epoch 0 at batch 0 (and a loader state saved in the checkpoint
would not be loaded). Once the counters are restored (training start), this rebuilds the loader;
the datamodule then starts it in the epoch, and at the batch, the counters name
(ImageDataModule._resume_position).
The counters, not a loader's own count, say where to resume: a loader has already yielded the
batch(es) Lightning prefetched.
"""

from __future__ import annotations

import lightning as L


class ExactResume(L.Callback):
    def on_train_start(self, trainer, pl_module):
        if trainer.ckpt_path:  # resumed, at an epoch's end or in the middle of one
            loop = trainer.fit_loop
            loop._combined_loader = None  # Lightning's own way to reload: setup_data builds anew
            loop.setup_data()
