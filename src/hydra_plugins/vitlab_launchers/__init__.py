"""vitlab's Hydra launchers (discovered by Hydra through the `hydra_plugins` namespace package):
hydra/launcher=pack (several jobs per GPU on this machine), slurm_pack (the same on SLURM nodes)
and ray (a Ray cluster, fractional GPUs). Their logic lives in vitlab.launch."""
