"""lrkit: learning-rate range tests, suggestion rules and fine-tuning for PyTorch."""

from lrkit.batch import default_forward, to_device
from lrkit.data import DataLoaders

__version__ = "0.1.0"

__all__ = [
    "DataLoaders",
    "__version__",
    "default_forward",
    "to_device",
]
