"""Vision: everything that knows its inputs are images.

The image pipeline's public face (folder or CSV of images -> `lrkit.DataLoaders`, built in
`lrkit.data`), `vision_learner` (`learner.py`), predicting from image files and
`load_learner` (`predictor.py`), multi-label thresholds (`thresholds.py`) and
`ClassificationInterpretation` (`interpret.py`). The generic Learner, checkpoints and exports
know nothing of images; this package builds on them.
"""

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
from lrkit.vision.interpret import ClassificationInterpretation
from lrkit.vision.learner import VisionLearner, vision_learner
from lrkit.vision.predictor import Predictor, load_learner
from lrkit.vision.thresholds import ThresholdSweep, sweep_thresholds

__all__ = [
    "IMAGENET_STATS",
    "IMAGE_EXTENSIONS",
    "AugConfig",
    "BadImagesError",
    "BatchTransform",
    "ClassificationInterpretation",
    "ImageDecodeError",
    "Junk",
    "JunkWarning",
    "Predictor",
    "PresizeConfig",
    "ThresholdSweep",
    "VisionLearner",
    "check_image",
    "csv_dataloaders",
    "get_image_files",
    "image_dataloaders",
    "junk_report",
    "load_learner",
    "load_rgb",
    "sweep_thresholds",
    "vision_learner",
]
