from .datamodule import ImageDataModule
from .splits import Splits

__all__ = ["ImageDataModule", "Splits"]
