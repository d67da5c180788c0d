"""A callback for tests that run real processes: a NaN in one rank's batch at one step."""

import lightning as L


class NaNOnRank(L.Callback):
    """Fills the images of rank `rank`'s batch at optimiser step `step` with NaN."""

    def __init__(self, rank: int = 1, step: int = 2):
        self.rank, self.step = rank, step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            batch[0].fill_(float("nan"))


class DrawPerRank(L.Callback):
    """Writes one torch draw per rank at the start of every epoch (rank<r>_epoch<e>.txt in the
    run folder): what dropout would draw there. After the draw, the stream is put back."""

    def on_train_epoch_start(self, trainer, pl_module):
        import torch

        state = torch.get_rng_state()
        value = torch.rand(1).item()
        torch.set_rng_state(state)
        folder = trainer.default_root_dir
        with open(f"{folder}/rank{trainer.global_rank}_epoch{trainer.current_epoch}.txt", "w") as f:
            f.write(repr(value))
