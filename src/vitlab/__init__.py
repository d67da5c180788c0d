"""vitlab: Vision Transformer experiments with PyTorch Lightning and Hydra."""

from . import _moved

__version__ = "0.1.0"

_moved.install()  # the modules' names before the layout (vitlab.module, ...) still import
