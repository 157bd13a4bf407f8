"""Validation: the loss and metrics of a model over a whole loader, as one number each.

The loss is averaged over items (each batch's mean loss weighted by its size) and each metric
is computed once on the predictions of the whole set. Under torchrun each rank evaluates a
contiguous block of the loader (no item twice, none padded in); the loss sums and item counts
are summed over ranks and the predictions gathered in rank order, so every rank gets what one
process would compute on the whole set.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

from lrkit import distributed
from lrkit.batch import channels_last_batch, items_in, to_device
from lrkit.data.dataloaders import length_or_none
from lrkit.layer_groups import eval_mode
from lrkit.metrics import metric_name
from lrkit.step import autocast

if TYPE_CHECKING:
    from lrkit.learner import Learner


def validate(learn: Learner, loader: Iterable | None = None) -> dict[str, float | None]:
    """Loss and metrics on the validation loader (or `loader`); None values when it is empty."""
    loader = learn.dls.valid if loader is None else loader
    names = ["valid_loss", *(metric_name(m) for m in learn.metrics)]
    empty = dict.fromkeys(names)
    if loader is None or length_or_none(loader) == 0:
        warn_no_valid(learn)
        return empty
    total_loss, count, preds, targets = evaluate(learn, loader, keep=bool(learn.metrics))
    if count == 0:
        warn_no_valid(learn)
        return empty
    results: dict[str, float | None] = {"valid_loss": total_loss / count}
    if learn.metrics:
        all_preds, all_targets = torch.cat(preds), torch.cat(targets)
        for metric in learn.metrics:
            results[metric_name(metric)] = float(metric(all_preds, all_targets))
    return results


def get_preds(learn: Learner, loader: Iterable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw model outputs and targets over the validation loader (or `loader`), on the CPU."""
    loader = learn.dls.valid if loader is None else loader
    if loader is None:
        raise ValueError("there is no validation loader; pass get_preds(loader)")
    _, count, preds, targets = evaluate(learn, loader, keep=True, cpu=True)
    if count == 0:
        raise ValueError("the loader yields no batches, so there is nothing to predict")
    return torch.cat(preds), torch.cat(targets)


def evaluate(
    learn: Learner, loader: Iterable, keep: bool, cpu: bool = False
) -> tuple[float, int, list[torch.Tensor], list[torch.Tensor]]:
    """Summed loss (per item), item count and, with `keep`, the outputs and targets, over the
    whole of `loader` (under torchrun: over all ranks' blocks, gathered on the CPU)."""
    if not distributed.is_distributed() or length_or_none(loader) is None:
        return _evaluate(learn, loader, keep, cpu)
    total_loss, count, preds, targets = _evaluate(
        learn, learn._share(loader, train=False), keep, cpu=True
    )
    total_loss, count = distributed.all_sum([total_loss, count])
    if keep:
        parts = distributed.gather((preds, targets))  # each rank's block, in rank order
        preds = [p for rank_preds, _ in parts for p in rank_preds]
        targets = [t for _, rank_targets in parts for t in rank_targets]
    return total_loss, int(count), preds, targets


def _evaluate(
    learn: Learner, loader: Iterable, keep: bool, cpu: bool
) -> tuple[float, int, list[torch.Tensor], list[torch.Tensor]]:
    total_loss, count = 0.0, 0
    preds: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    model = learn._train_model
    precision = autocast(learn.options.mixed_precision, learn.device)
    with eval_mode(learn.model), torch.no_grad(), precision:
        for batch in loader:
            batch = _prepared(learn, batch)
            pred, target = learn.forward(model, batch)
            n = items_in(target)
            total_loss += float(learn.loss_fn(pred, target)) * n
            count += n
            if keep:
                preds.append(pred.float().cpu() if cpu else pred.float())
                targets.append(target.cpu() if cpu else target)
    return total_loss, count, preds, targets


def _prepared(learn: Learner, batch: Any) -> Any:
    batch = to_device(batch, learn.device, non_blocking=True)
    return channels_last_batch(batch) if learn.options.channels_last else batch


def warn_no_valid(learn: Learner) -> None:
    """Warn once per fit that there is no validation data."""
    if not learn._warned_no_valid:
        warnings.warn(
            "no validation data: training without validation (valid_loss and metrics "
            "are None); pass a valid loader to DataLoaders to measure them",
            UserWarning,
            stacklevel=5,
        )
        learn._warned_no_valid = True
