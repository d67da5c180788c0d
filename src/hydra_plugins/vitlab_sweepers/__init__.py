"""vitlab's Hydra sweepers (discovered by Hydra through the `hydra_plugins` namespace package):
hydra/sweeper=tuned (tune each configuration with Optuna, then train its best setting on several
seeds; experiment=posemb_tuned)."""
