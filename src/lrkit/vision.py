"""The image pipeline's public face: folder or CSV of images -> `lrkit.DataLoaders`."""

from lrkit.data.augment import IMAGENET_STATS, AugConfig, BatchTransform
from lrkit.data.decode import ImageDecodeError, Junk, check_image, load_rgb
from lrkit.data.items import IMAGE_EXTENSIONS, get_image_files
from lrkit.data.pipeline import (
    BadImagesError,
    JunkWarning,
    csv_dataloaders,
    image_dataloaders,
    junk_report,
)
from lrkit.data.presize import PresizeConfig

__all__ = [
    "IMAGENET_STATS",
    "IMAGE_EXTENSIONS",
    "AugConfig",
    "BadImagesError",
    "BatchTransform",
    "ImageDecodeError",
    "Junk",
    "JunkWarning",
    "PresizeConfig",
    "check_image",
    "csv_dataloaders",
    "get_image_files",
    "image_dataloaders",
    "junk_report",
    "load_rgb",
]
