"""Ready-made datasets as `lrkit.DataLoaders`: Fashion-MNIST and Oxford-IIIT Pets."""

from lrkit.data.fashion import fashion_mnist, load_fashion_mnist
from lrkit.data.pets import pets, pets_folder
from lrkit.fetch import DownloadError, cache_dir

__all__ = [
    "DownloadError",
    "cache_dir",
    "fashion_mnist",
    "load_fashion_mnist",
    "pets",
    "pets_folder",
]
