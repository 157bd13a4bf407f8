"""Data: loaders bundled with what the pipeline knows about them, image pipeline, datasets."""

from lrkit.data.dataloaders import DataLoaders

__all__ = ["DataLoaders"]
