"""Looking at a classifier's mistakes on the validation set (fastbook chapter 5).

`ClassificationInterpretation.from_learner(learn)` predicts the validation set once and keeps
the logits, targets and each item's loss; everything else is computed from those: the
confusion matrix, the most confused pairs, the top losses and, for multi-label data, each
class's precision and recall at the learner's threshold. The images of the top losses are
fetched again from the loader when a figure asks for them, so nothing image-sized is kept.
Figures are matplotlib Figures (no pyplot), written as PNG when given a path.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from matplotlib.figure import Figure

from lrkit.data.show import peek_batch, preserved_rng, to_display
from lrkit.plots import (
    confusion_matrix_figure,
    per_class_figure,
    save_figure,
    show_batch_figure,
)

if TYPE_CHECKING:
    from lrkit.learner import Learner

DEFAULT_THRESH = 0.5  # multi-label threshold on the sigmoid when the learner has none
RIGHT, WRONG = "#1a7f37", "#c62828"  # title colours of right and wrong predictions


class TopLosses(NamedTuple):
    """The largest per-item losses, as `torch.topk` returns them (fastai's names)."""

    values: torch.Tensor  # (k,) float losses, largest first (ties: lower index first)
    indices: torch.Tensor  # (k,) int64 positions in the order the loader yields its items


# ----------------------------------------------------------------- pure functions


def confusion_counts(actual: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) int64 counts: row = actual class, column = predicted class."""
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(
        counts, (np.asarray(actual, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1
    )
    return counts


def pairs_by_count(counts: np.ndarray, min_val: int = 1) -> list[tuple[int, int, int]]:
    """Off-diagonal (actual, predicted, count) with count >= min_val, largest count first.

    Ties keep the (actual, predicted) order, so the result does not depend on the sort.
    """
    rows, cols = np.nonzero(counts >= max(min_val, 1))
    pairs = [(int(a), int(p), int(counts[a, p])) for a, p in zip(rows, cols, strict=True) if a != p]
    return sorted(pairs, key=lambda pair: -pair[2])  # stable: ties stay in row-major order


def precision_recall(hits: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """Per column of boolean (N, C) decisions and truths: tp, fp, fn, support, precision,
    recall and f1, each of shape (C,). A 0/0 ratio counts as 0, as in lrkit.metrics."""
    hits, truth = np.asarray(hits, dtype=bool), np.asarray(truth, dtype=bool)
    tp = (hits & truth).sum(axis=0)
    fp = (hits & ~truth).sum(axis=0)
    fn = (~hits & truth).sum(axis=0)

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.where(den > 0, num / np.maximum(den, 1), 0.0)

    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    f1 = ratio(2 * tp, 2 * tp + fp + fn)
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "support": tp + fn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def per_item_losses(
    loss_fn: Callable[[Any, Any], torch.Tensor], preds: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """(N,) loss of each item: the loss with reduction="none" when it has that setting
    (torch's losses), else the loss of each item alone; extra dims (multi-label classes) are
    averaged, as the mean-reduced loss does."""
    if isinstance(loss_fn, torch.nn.Module) and isinstance(
        getattr(loss_fn, "reduction", None), str
    ):
        unreduced = copy.deepcopy(loss_fn).cpu()
        unreduced.reduction = "none"
        with torch.no_grad():
            out = unreduced(preds, targets).float()
        if out.ndim >= 1 and out.shape[0] == len(preds):
            return out.reshape(len(preds), -1).mean(dim=1)
    with torch.no_grad():
        return torch.stack(
            [
                loss_fn(preds[i : i + 1], targets[i : i + 1]).float().reshape(())
                for i in range(len(preds))
            ]
        )


# ----------------------------------------------------------------- the interpretation


class ClassificationInterpretation:
    """Predictions on a validation set, and fastai's ways of looking at the mistakes.

    `preds` are raw outputs (N, C); `targets` class indices (N,) or, multi-label, multi-hot
    (N, C); `losses` (N,) each item's loss. `loader` and `stats` are only needed by
    `plot_top_losses` (the images are fetched again, in the loader's order).
    """

    def __init__(
        self,
        preds: torch.Tensor,
        targets: torch.Tensor,
        losses: torch.Tensor,
        vocab: Sequence[str] | None = None,
        multi_label: bool = False,
        thresh: float = DEFAULT_THRESH,
        loader: Iterable | None = None,
        stats: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> None:
        if preds.ndim != 2:
            raise ValueError(
                f"predictions must be (N, C) class scores, got shape {tuple(preds.shape)}"
            )
        if multi_label and targets.shape != preds.shape:
            raise ValueError(
                "multi-label targets must be multi-hot of the predictions' shape "
                f"{tuple(preds.shape)}, got {tuple(targets.shape)}"
            )
        if not multi_label and (targets.ndim != 1 or targets.is_floating_point()):
            raise ValueError(
                "single-label targets must be class indices of shape (N,), got "
                f"{targets.dtype} {tuple(targets.shape)}; for multi-hot targets set "
                "multi_label=True on the DataLoaders"
            )
        if len(targets) != len(preds) or losses.shape != (len(preds),):
            raise ValueError(
                f"predictions ({len(preds)}), targets ({len(targets)}) and losses "
                f"{tuple(losses.shape)} must cover the same items"
            )
        n_classes = preds.shape[1]
        if vocab is not None and len(vocab) != n_classes:
            raise ValueError(
                f"the vocab has {len(vocab)} names but the model predicts {n_classes} classes"
            )
        self.preds, self.targets, self.losses = preds.float(), targets, losses.float()
        self.vocab = list(vocab) if vocab is not None else [str(i) for i in range(n_classes)]
        self.multi_label, self.thresh = multi_label, float(thresh)
        self.loader, self.stats = loader, stats

    @classmethod
    def from_learner(
        cls, learn: Learner, dl: Iterable | None = None, thresh: float | None = None
    ) -> ClassificationInterpretation:
        """Predict `dl` (default: the validation loader) with `learn` once, losses per item.

        Multi-label decisions use `thresh`, else the learner's `thresh` (set by
        find_threshold), else 0.5. Raises ValueError when there is nothing to predict.
        """
        loader = learn.dls.valid if dl is None else dl
        if loader is None:
            raise ValueError(
                "there is no validation loader to interpret; pass from_learner(learn, dl)"
            )
        preds, targets = learn.get_preds(loader)
        losses = per_item_losses(learn.loss_fn, preds, targets)
        if thresh is None:
            thresh = getattr(learn, "thresh", DEFAULT_THRESH)
        return cls(
            preds,
            targets,
            losses,
            learn.dls.vocab,
            learn.dls.multi_label,
            thresh,
            loader,
            getattr(learn.dls, "stats", None),
        )

    # ------------------------------------------------------------- numbers

    @property
    def probs(self) -> torch.Tensor:
        """(N, C) probabilities: softmax over classes, or a sigmoid per class (multi-label)."""
        return self.preds.sigmoid() if self.multi_label else self.preds.softmax(dim=1)

    @property
    def decoded(self) -> torch.Tensor:
        """Predicted classes: indices (N,), or multi-hot bools (N, C) above the threshold."""
        return self.probs > self.thresh if self.multi_label else self.preds.argmax(dim=1)

    def _single_label(self, what: str) -> None:
        if self.multi_label:
            raise ValueError(
                f"{what} is for single-label data; for multi-label data use per_class() "
                f"(precision and recall of each class at threshold {self.thresh:g})"
            )

    def confusion_matrix(self) -> np.ndarray:
        """(C, C) int64 numpy counts: row = actual class, column = predicted, in vocab order."""
        self._single_label("confusion_matrix()")
        return confusion_counts(self.targets.numpy(), self.decoded.numpy(), len(self.vocab))

    def most_confused(self, min_val: int = 1) -> list[tuple[str, str, int]]:
        """(actual, predicted, count) for every mistake made at least `min_val` times, most
        frequent first (ties in vocab order of actual, then predicted)."""
        pairs = pairs_by_count(self.confusion_matrix(), min_val)
        return [(self.vocab[a], self.vocab[p], n) for a, p, n in pairs]

    def top_losses(self, k: int | None = None, largest: bool = True) -> TopLosses:
        """The `k` (default: all) largest per-item losses and their item positions.

        Returns TopLosses(values, indices), unpackable as `losses, idxs = ...` like fastai's;
        indices count items in the order the loader yields them. `largest=False`: smallest.
        """
        n = len(self.losses)
        k = n if k is None else k
        if not 0 <= k <= n:
            raise ValueError(f"k must be between 0 and the {n} items, got {k}")
        order = torch.sort(self.losses, descending=largest, stable=True).indices[:k]
        return TopLosses(self.losses[order], order)

    def per_class(self) -> dict[str, dict[str, float]]:
        """Per class name: precision, recall, f1, support (actual positives), tp, fp, fn.

        Multi-label: decisions at `self.thresh`; single-label: one class against the rest.
        """
        if self.multi_label:
            hits, truth = self.decoded.numpy(), self.targets.numpy() > 0.5
        else:
            eye = np.eye(len(self.vocab), dtype=bool)
            hits, truth = eye[self.decoded.numpy()], eye[self.targets.numpy()]
        table = precision_recall(hits, truth)
        return {
            name: {key: values[i].item() for key, values in table.items()}
            for i, name in enumerate(self.vocab)
        }

    # ------------------------------------------------------------- figures

    def plot_confusion_matrix(
        self, path: str | Path | None = None, normalize: bool = False
    ) -> Figure:
        """The confusion matrix as a heat map with counts (row fractions when `normalize`)."""
        counts = self.confusion_matrix()
        return confusion_matrix_figure(counts, self.vocab, normalize, path)

    def plot_per_class(self, path: str | Path | None = None) -> Figure:
        """Precision and recall of each class as bars (multi-label's counterpart of the matrix)."""
        table = self.per_class()
        title = (
            f"per-class precision and recall at threshold {self.thresh:g}"
            if self.multi_label
            else ("per-class precision and recall")
        )
        return per_class_figure(table, title, path)

    def plot_top_losses(
        self, k: int = 9, path: str | Path | None = None, ncols: int | None = None
    ) -> Figure:
        """The `k` images with the largest losses, titled predicted, actual, loss and the
        probability of the prediction; images de-normalised with the loaders' stats.

        Raises ValueError when the inputs are not images (B, C, H, W) or the loader's order
        changed since the predictions (a shuffled loader).
        """
        if self.loader is None:
            raise ValueError(
                "plot_top_losses needs the loader the predictions came from; use from_learner"
            )
        if k < 1:
            raise ValueError(f"plot_top_losses needs k >= 1 images to show, got {k}")
        top = self.top_losses(min(k, len(self.losses)))
        indices = top.indices.tolist()
        images = to_display(self._inputs_at(indices), self.stats)
        probs = self.probs
        titles = []
        for loss, i in zip(top.values.tolist(), indices, strict=True):
            if self.multi_label:
                picked = torch.nonzero(probs[i] > self.thresh).flatten().tolist()
                predicted = ";".join(self.vocab[c] for c in picked) or "(none)"
                actual = ";".join(
                    self.vocab[c] for c in torch.nonzero(self.targets[i] > 0.5).flatten().tolist()
                )
                prob = ";".join(f"{probs[i, c]:.2f}" for c in picked) or f"max {probs[i].max():.2f}"
            else:
                c = int(self.decoded[i])
                predicted, actual = self.vocab[c], self.vocab[int(self.targets[i])]
                prob = f"{probs[i, c]:.2f}"
            titles.append(f"predicted: {predicted}\nactual: {actual}\nloss {loss:.2f}, prob {prob}")
        fig = show_batch_figure(images, titles, ncols=ncols)
        for ax in fig.axes[: len(titles)]:
            ax.title.set_fontsize(8)
        fig.suptitle("top losses: predicted / actual / loss / probability of the prediction")
        fig.tight_layout()
        return save_figure(fig, path)

    def _inputs_at(self, indices: list[int]) -> torch.Tensor:
        """(k, C, H, W) inputs of the items at `indices`, fetched again from the loader."""
        wanted = {index: slot for slot, index in enumerate(indices)}
        found: dict[int, torch.Tensor] = {}
        start = 0
        with preserved_rng(self.loader):
            for batch in self.loader:
                x, y = _inputs_and_targets(batch)
                for offset in range(len(y)):
                    index = start + offset
                    if index in wanted:
                        if not torch.equal(y[offset].cpu(), self.targets[index]):
                            raise ValueError(
                                f"item {index} has another target than when it was predicted: the "
                                "loader changes its order between passes (shuffled?); interpret an "
                                "unshuffled loader"
                            )
                        found[index] = x[offset].detach().cpu()
                start += len(y)
                if len(found) == len(wanted):
                    break
        if len(found) != len(wanted):
            raise ValueError(f"the loader yields {start} items, fewer than when it was predicted")
        return torch.stack([found[index] for index in indices])


def _inputs_and_targets(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (B, C, H, W), targets) of an (x, y) batch; ValueError for other inputs."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ValueError(
            f"showing images needs (images, targets) batches, got {type(batch).__name__}"
        )
    x, y = batch[0], batch[1]
    if isinstance(x, torch.Tensor) and x.ndim == 3:  # (B, H, W) greyscale
        x = x.unsqueeze(1)
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] not in (1, 3):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"only images (B, 1 or 3, H, W) can be shown, got inputs {shape}; "
            "use top_losses(k) for the losses and item positions"
        )
    return x, y


def show_results(
    learn: Learner, path: str | Path | None = None, n: int = 9, dl: Iterable | None = None
) -> Figure:
    """The first `n` images of the validation loader (or `dl`), titled actual and predicted,
    green when right and red when wrong; the loader's random state is left as it was."""
    loader = learn.dls.valid if dl is None else dl
    if loader is None:
        raise ValueError("there is no validation loader to show results of; pass dl")
    try:
        batch = peek_batch(loader)
    except StopIteration:
        raise ValueError("the loader yields no batches, so there are no results to show") from None
    x, y = _inputs_and_targets(batch)
    x, y = x[:n], y[:n]
    preds, _ = learn.get_preds([(x, y)])
    vocab = learn.dls.vocab or [str(i) for i in range(preds.shape[1])]
    titles, right = [], []
    if learn.dls.multi_label:
        thresh = getattr(learn, "thresh", DEFAULT_THRESH)
        hits, truth = preds.sigmoid() > thresh, y.cpu() > 0.5
        for h, t in zip(hits, truth, strict=True):
            names = [
                ";".join(vocab[c] for c in torch.nonzero(row).flatten().tolist()) or "(none)"
                for row in (t, h)
            ]
            titles.append(f"actual: {names[0]}\npredicted: {names[1]}")
            right.append(bool(torch.equal(h, t)))
    else:
        for p, t in zip(preds.argmax(dim=1).tolist(), y.cpu().tolist(), strict=True):
            titles.append(f"actual: {vocab[int(t)]}\npredicted: {vocab[p]}")
            right.append(p == int(t))
    fig = show_batch_figure(to_display(x, getattr(learn.dls, "stats", None)), titles)
    for ax, ok in zip(fig.axes, right, strict=False):
        ax.title.set_color(RIGHT if ok else WRONG)
        ax.title.set_fontsize(8)
    fig.suptitle("results on the validation set: actual / predicted (green right, red wrong)")
    fig.tight_layout()
    return save_figure(fig, path)
