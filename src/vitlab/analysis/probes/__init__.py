"""Probes of what a trained model assumes about images: plain functions over a model and batches
(no Lightning), batched on the model's device. Each returns {setting: accuracy} or, for CKA, a
layer x layer similarity matrix; `src/probe.py ckpt_path=<run>` runs them on a trained run."""

from .cka import cka_matrix, layer_names, linear_cka
from .occlusion import occlude, occlusion_accuracy
from .resolution import resize, resolution_accuracy
from .shift import shift_accuracy, translate
from .shuffle import shuffle_accuracy, shuffle_patches

__all__ = ["cka_matrix", "layer_names", "linear_cka", "occlude", "occlusion_accuracy", "resize",
           "resolution_accuracy", "shift_accuracy", "translate", "shuffle_accuracy", "shuffle_patches"]
