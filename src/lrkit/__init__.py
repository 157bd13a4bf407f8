"""lrkit: learning-rate range tests, suggestion rules and fine-tuning for PyTorch."""

from lrkit import datasets, distributed, models, suggest, vision
from lrkit.batch import default_forward, to_device
from lrkit.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    ProgressCallback,
    Recorder,
    SaveBestModel,
)
from lrkit.compare import CompareConfig, Comparison, compare_rules
from lrkit.config import DataConfig, RangeTestConfig
from lrkit.data import DataLoaders
from lrkit.finder import lr_find, lr_find_repeated
from lrkit.layer_groups import check_layer_groups
from lrkit.learner import Learner
from lrkit.loggers import TensorBoardCallback, WandbCallback
from lrkit.malloc import tune_malloc
from lrkit.metrics import (
    accuracy,
    accuracy_multi,
    error_rate,
    f1_multi,
    fbeta_multi,
    top_k_accuracy,
)
from lrkit.models.registry import register_model
from lrkit.prediction import Prediction
from lrkit.range_test_result import LRFindResult, RepeatedLRFind
from lrkit.vision import (
    ClassificationInterpretation,
    Predictor,
    VisionLearner,
    load_learner,
    vision_learner,
)

__version__ = "0.1.0"

__all__ = [
    "CSVLogger",
    "Callback",
    "ClassificationInterpretation",
    "CompareConfig",
    "Comparison",
    "DataConfig",
    "DataLoaders",
    "EarlyStopping",
    "LRFindResult",
    "Learner",
    "Prediction",
    "Predictor",
    "ProgressCallback",
    "RangeTestConfig",
    "Recorder",
    "RepeatedLRFind",
    "SaveBestModel",
    "TensorBoardCallback",
    "VisionLearner",
    "WandbCallback",
    "__version__",
    "accuracy",
    "accuracy_multi",
    "check_layer_groups",
    "compare_rules",
    "datasets",
    "default_forward",
    "distributed",
    "error_rate",
    "f1_multi",
    "fbeta_multi",
    "load_learner",
    "lr_find",
    "lr_find_repeated",
    "models",
    "register_model",
    "suggest",
    "to_device",
    "top_k_accuracy",
    "tune_malloc",
    "vision",
    "vision_learner",
]
