"""The training objectives: the LightningModules (BaseModule, the supervised ImageClassifier, MAE
pre-training) and what they compose: optimiser and schedule, metrics, DeiT distillation."""
