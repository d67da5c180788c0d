"""Sweeps that fill the hardware: the logic behind vitlab's Hydra launchers
(src/hydra_plugins/vitlab_launchers/): slots per GPU, the packing loop, SLURM bundles, and the
Hydra glue they share. Nothing here imports torch, submitit or ray at module level: Hydra imports
every launcher plugin at start-up, also for `--help` and tab completion."""
