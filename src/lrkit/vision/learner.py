"""`vision_learner`: a (pretrained) body, a new head, the loss for the labels, three layer groups.

The seed workflow in one call: `vision_learner(dls, "resnet50", pretrained="imagenet")` builds
lrkit's resnet50, loads torchvision's ImageNet weights, cuts it at the global pool, adds
fastai's head for `dls.c` classes, picks cross-entropy (or BCE-with-logits when `dls` is
multi-label), splits into (stem + layer1 + layer2), (layer3 + layer4), head and freezes all but
the head. Pretrained weights bring the input normalisation they were trained with, and the
loaders switch to it (fastai's `normalize=True`), so the export records it too.
torchvision and timm models (constructors, or names "timm:<name>" / "torchvision:<name>") are
accepted where those libraries load; their exports name them, so no pickle is needed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import nn

from lrkit.data import DataLoaders
from lrkit.data.preprocess import Preprocess, as_preprocess
from lrkit.layer_groups import Splitter
from lrkit.learner import Learner
from lrkit.metrics import Metric, accuracy_multi
from lrkit.models.foreign import (
    LIBRARIES,
    check_weights_reachable,
    library_names,
    optional_import,
    split_ref,
)
from lrkit.models.hub import Stats, imagenet_weights, weight_kinds, weights_stats
from lrkit.models.split import default_split
from lrkit.models.vision_model import ARCHS, attach_head, build_network, vision_model
from lrkit.models.weights import load_pretrained, set_in_chans
from lrkit.onnx_export import export_onnx
from lrkit.prediction import Prediction
from lrkit.vision import interpret
from lrkit.vision.predictor import predict
from lrkit.vision.thresholds import ThresholdSweep, sweep_thresholds

Pretrained = bool | str | Path | None
Arch = str | Callable[..., nn.Module] | nn.Module


class VisionLearner(Learner):
    """A Learner for a body + head image model: a multi-label threshold, self-describing export."""

    def __init__(
        self,
        *args: Any,
        model_spec: dict[str, Any] | None = None,
        thresh: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.model_spec = model_spec  # vision_model(**model_spec) rebuilds the model, if set
        self.thresh = thresh  # multi-label decision threshold on the sigmoid

    def find_threshold(
        self,
        threshs: Sequence[float] | None = None,
        metric: Callable[..., torch.Tensor] = accuracy_multi,
        path: str | Path | None = None,
    ) -> ThresholdSweep:
        """Sweep the multi-label threshold on the validation set; predict uses the best one."""
        if not self.dls.multi_label:
            raise ValueError(
                "find_threshold is for multi-label data (sigmoid per class); these dataloaders "
                "are single-label, where predict takes the highest-scoring class"
            )
        preds, targets = self.get_preds()
        sweep = sweep_thresholds(preds, targets, threshs, metric)
        self.thresh = sweep.best
        if path is not None:
            sweep.plot(path)
        return sweep

    def predict(
        self, item: Any, preprocess: Preprocess | dict[str, Any] | None = None
    ) -> Prediction:
        """Label(s), index(es) and probabilities for one image file, PIL image or tensor.

        Images are made into inputs as `preprocess` says, by default as the loaders do
        (`dls.preprocess`). Multi-label: every label whose sigmoid is above `self.thresh`
        (see find_threshold).
        """
        record = as_preprocess(preprocess) if preprocess is not None else self.dls.preprocess
        return predict(
            self.model,
            item,
            self.dls.vocab,
            self.dls.multi_label,
            record,
            self.device,
            self.thresh,
        )

    def show_results(
        self, path: str | Path | None = None, n: int = 9, loader: Iterable | None = None
    ) -> Figure:
        """First `n` validation images titled actual/predicted (see lrkit.vision.interpret)."""
        return interpret.show_results(self, path, n, loader)

    def to_onnx(self, path: str | Path, size: int | None = None) -> Path:
        """Write the model to `path` as ONNX for serving: input "images" (B, C, size, size),
        normalised as the loaders do; output "logits" (B, n_out); the batch size is free.

        `size` defaults to the validation images' size (else 224). Needs the onnx package
        (`pip install 'lrkit[onnx]'`); raises ModuleNotFoundError in one line without it.
        """
        if size is None:
            size = self.dls.preprocess.size if self.dls.preprocess is not None else None
            size = size or 224
        example = torch.zeros(1, _in_chans(self.dls), size, size)
        return export_onnx(self.model, path, example)

    def export(
        self,
        path: str | Path,
        factory: Callable[..., nn.Module] | str | None = None,
        kwargs: dict[str, Any] | None = None,
        preprocess: Preprocess | dict[str, Any] | None = None,
        pickle_model: bool = False,
    ) -> Path:
        """Write what `load_learner(path).predict(item)` needs, threshold and image size included.

        lrkit architectures and timm/torchvision models rebuild from their spec
        (`vision_model(arch, ...)`, arch "timm:<name>" for a library's); other models need
        factory/kwargs, or pickle_model=True.
        """
        if factory is None and not pickle_model and self.model_spec is not None:
            factory, kwargs = vision_model, dict(self.model_spec)
        return super().export(path, factory, kwargs, preprocess, pickle_model, self.thresh)


def _weights_kind(pretrained: Pretrained) -> tuple[str | None, Path | None]:
    """("imagenet"/"imagenet_v2", None), (None, path) or (None, None) for no weights."""
    if pretrained is None or pretrained is False:
        return None, None
    if pretrained is True:
        return "imagenet", None
    if isinstance(pretrained, str) and pretrained in weight_kinds():
        return pretrained, None
    if isinstance(pretrained, (str, Path)):
        path = Path(pretrained)
        if not path.is_file():
            raise FileNotFoundError(
                f"pretrained={str(pretrained)!r} is neither one of {weight_kinds()} nor an "
                "existing weights file"
            )
        return None, path
    raise TypeError(
        f"pretrained must be False, True, 'imagenet', 'imagenet_v2' or a path, got {pretrained!r}"
    )


def _lrkit_name(arch: Arch) -> str | None:
    """The ARCHS name of `arch` when it is one of lrkit's (a name or a factory function)."""
    if isinstance(arch, str):
        return arch if arch in ARCHS else None
    return next((name for name, fn in ARCHS.items() if fn is arch), None)


def _library_ref(arch: Arch) -> str | None:
    """ "timm:<name>" / "torchvision:<name>" for a library model given by name or constructor.

    A bare name that is not lrkit's is taken to be timm's. None for anything else (a model
    instance, a user's constructor, a constructor its library does not register by name).
    """
    if isinstance(arch, str):
        if split_ref(arch) is not None:
            return arch
        if optional_import("timm") is None:
            raise ValueError(
                f"unknown architecture {arch!r}: lrkit has {sorted(ARCHS)} (timm, for its model "
                "names, is not installed or does not load); or pass a model constructor"
            )
        return f"timm:{arch}"
    module = getattr(arch, "__module__", None) or ""
    library = module.split(".")[0]
    name = getattr(arch, "__name__", None)
    if library in LIBRARIES and isinstance(name, str) and name in (library_names(library) or ()):
        return f"{library}:{name}"
    return None


def _foreign_network(arch: Arch, kind: str | None, in_chans: int) -> nn.Module:
    """A torchvision/timm/user network, with its own library's ImageNet weights when asked."""
    if isinstance(arch, nn.Module):
        if kind is not None:
            raise ValueError(
                "a model instance brings its own weights; pass pretrained=False, or a path"
            )
        return arch
    if not callable(arch):
        raise TypeError(f"arch must be a name, a model constructor or a model, got {arch!r}")
    module = getattr(arch, "__module__", None) or ""
    if module.startswith("torchvision"):
        weights = {None: None, "imagenet": "IMAGENET1K_V1", "imagenet_v2": "IMAGENET1K_V2"}[kind]
        if kind is not None:
            check_weights_reachable("torchvision", getattr(arch, "__name__", "?"), kind)
        return arch(weights=weights)
    if module.startswith("timm"):
        if kind is not None:
            check_weights_reachable("timm", getattr(arch, "__name__", "?"), kind)
        return arch(pretrained=kind is not None, in_chans=in_chans)
    if kind is not None:
        raise ValueError(
            f"lrkit knows no ImageNet weights for {getattr(arch, '__name__', arch)!r}; pass "
            "pretrained=False, or the path of a weights file"
        )
    return arch()


def _normalize_like_weights(dls: DataLoaders, stats: Stats) -> None:
    """Make `dls` normalise with the weights' `stats`, as fastai's vision_learner does.

    Loaders with another number of channels are left as they are (their stats were made for
    them); loaders that cannot change their normalisation are left with a warning.
    """
    if dls.stats is None or len(dls.stats[0]) != len(stats[0]):
        return
    have = tuple(tuple(float(v) for v in part) for part in dls.stats)
    if have == stats:
        return
    loaders = [loader for loader in (dls.train, dls.valid) if loader is not None]
    if not all(callable(getattr(loader, "set_stats", None)) for loader in loaders):
        warnings.warn(
            f"the pretrained weights expect inputs normalised with mean {stats[0]} and std "
            f"{stats[1]}, but these loaders use {have[0]} and {have[1]} and cannot change; "
            "build them with the weights' stats, or pass normalize=False to keep them",
            stacklevel=3,
        )
        return
    for loader in loaders:
        loader.set_stats(stats)
    dls.stats = stats


def _in_chans(dls: DataLoaders) -> int:
    """Input channels, from the loaders' normalisation stats (one mean per channel); else 3."""
    if dls.stats is not None:
        return len(dls.stats[0])
    return 3


def vision_learner(
    dls: DataLoaders,
    arch: Arch = "resnet50",
    pretrained: Pretrained = "imagenet",
    metrics: Sequence[Metric] = (),
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
    n_out: int | None = None,
    in_chans: int | None = None,
    splitter: Splitter | None = None,
    lin_ftrs: int | None = 512,
    ps: float = 0.5,
    concat_pool: bool = True,
    cut: int | None = None,
    download_progress: bool = True,
    normalize: bool = True,
    **learner_kwargs: Any,
) -> VisionLearner:
    """A Learner for image classification: body (pretrained) + new head, body frozen if pretrained.

    `arch`: "resnet18".."resnet152", "resnet_small" (28x28 images), "efficientnet_lite0"..
    "efficientnet_lite4", a torchvision or timm constructor, a name "timm:<name>" /
    "torchvision:<name>" (a bare unknown name is timm's), or any callable/module whose children
    run in order or that has `forward_features`. Offline, pretrained timm/torchvision weights
    that are not cached fail within seconds (DownloadError, one line). `pretrained`: "imagenet"
    (= True), "imagenet_v2", a weights file, or False. `n_out` defaults to the number of classes
    in `dls.vocab`, `in_chans` to the number of channels in `dls.stats`. With pretrained weights
    of an lrkit architecture and `normalize=True`, the loaders `dls` are switched (in place) to
    the normalisation those weights were trained with (mean = std = 0.5 for EfficientNet-Lite,
    ImageNet's statistics for the ResNets); a weights file is taken to be trained like the
    architecture's ImageNet weights. Other keyword arguments go to `Learner` (opt, wd, device,
    ...).
    """
    n_out = n_out if n_out is not None else dls.c
    if n_out is None:
        raise ValueError("dls has no vocab to count the classes; pass n_out=<number of outputs>")
    in_chans = in_chans if in_chans is not None else _in_chans(dls)
    kind, path = _weights_kind(pretrained)
    name = _lrkit_name(arch)
    ref = _library_ref(arch) if name is None and not isinstance(arch, nn.Module) else None
    if name is not None:
        network = ARCHS[name](in_chans=in_chans)
        if kind is not None:
            path = imagenet_weights(name, kind, progress=download_progress)
    elif isinstance(arch, str):
        network = build_network(ref, in_chans, kind)
    else:
        network = _foreign_network(arch, kind, in_chans)
    if path is not None:
        load_pretrained(network, path)
    stats = weights_stats(name, kind or "imagenet") if name is not None else None
    if normalize and stats is not None and (kind is not None or path is not None):
        _normalize_like_weights(dls, stats)
    if name is None:
        set_in_chans(network, in_chans)  # adapts pretrained RGB filters; no-op when it fits
    model = attach_head(network, n_out, lin_ftrs, ps, concat_pool, cut, in_chans)
    spec = None
    if (name is not None or ref is not None) and cut is None:
        spec = {
            "arch": name if name is not None else ref,
            "n_out": n_out,
            "in_chans": in_chans,
            "lin_ftrs": lin_ftrs,
            "ps": ps,
            "concat_pool": concat_pool,
        }
    if loss_fn is None:
        loss_fn = nn.BCEWithLogitsLoss() if dls.multi_label else nn.CrossEntropyLoss()
    learn = VisionLearner(
        model,
        dls,
        loss_fn,
        metrics=metrics,
        splitter=splitter if splitter is not None else default_split,
        model_spec=spec,
        **learner_kwargs,
    )
    if kind is not None or path is not None:
        learn.freeze()
    return learn
