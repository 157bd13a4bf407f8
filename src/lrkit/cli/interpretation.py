"""What `lrkit train` and `lrkit fine-tune` say about the model they trained (fastbook ch. 5).

Single-label: confusion_matrix.png, top_losses.png and the most confused pairs (actual,
predicted, count), printed and recorded. Multi-label: the threshold sweep (accuracy_multi at
each threshold on the validation set; the best one is kept on the learner, so the export
stores it), then each class's precision and recall at that threshold (per_class.png).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from lrkit import ClassificationInterpretation
from lrkit.report import rich_table
from lrkit.vision import VisionLearner

TOP_LOSSES = 9  # images in top_losses.png (a 3 x 3 grid)
SHOWN_PAIRS = 10  # most confused pairs printed (all are recorded)
OUTPUTS = ("confusion_matrix.png", "top_losses.png", "per_class.png", "threshold.png")


def interpret(learn: VisionLearner, out: Path, console: Console) -> dict[str, Any]:
    """Write and print the interpretation of `learn` on its validation set; returns the
    record for the command's JSON (with "written": the files written). Nothing to interpret
    without a validation set: the record says so."""
    if learn.dls.valid is None:
        return {"skipped": "no validation set", "written": []}
    if learn.dls.multi_label:
        return _multi_label(learn, out, console)
    interp = ClassificationInterpretation.from_learner(learn)
    interp.plot_confusion_matrix(out / "confusion_matrix.png")
    interp.plot_top_losses(TOP_LOSSES, out / "top_losses.png")
    pairs = interp.most_confused(min_val=1)
    if pairs:
        rows = [["actual", "predicted", "times"]]
        rows += [[actual, predicted, str(n)] for actual, predicted, n in pairs[:SHOWN_PAIRS]]
        more = f" (first {SHOWN_PAIRS} of {len(pairs)})" if len(pairs) > SHOWN_PAIRS else ""
        console.print(rich_table(rows, f"most confused on the validation set{more}"))
    else:
        console.print("most confused: none (no mistakes on the validation set)")
    losses, indices = interp.top_losses(TOP_LOSSES)
    return {
        "confusion_matrix": interp.confusion_matrix().tolist(),
        "vocab": interp.vocab,
        "most_confused": [list(pair) for pair in pairs],
        "top_losses": [
            {"item": int(i), "loss": float(loss)}
            for loss, i in zip(losses.tolist(), indices.tolist(), strict=True)
        ],
        "written": ["confusion_matrix.png", "top_losses.png"],
    }


def _multi_label(learn: VisionLearner, out: Path, console: Console) -> dict[str, Any]:
    sweep = learn.find_threshold(path=out / "threshold.png")  # learn.thresh = the best one
    console.print(
        f"{sweep.metric} {sweep.best_score:.4f} at threshold {sweep.best:g} (the best of "
        f"{len(sweep.threshs)} thresholds {sweep.threshs[0]:g}..{sweep.threshs[-1]:g} on the "
        "validation set; stored in the export)"
    )
    interp = ClassificationInterpretation.from_learner(learn)
    per_class = interp.per_class()
    interp.plot_per_class(out / "per_class.png")
    rows = [["class", "precision", "recall", "items"]]
    for name, values in per_class.items():
        rows.append(
            [name, f"{values['precision']:.3f}", f"{values['recall']:.3f}", str(values["support"])]
        )
    console.print(rich_table(rows, f"per class at threshold {sweep.best:g}, validation set"))
    return {
        "threshold": sweep.best,
        sweep.metric: sweep.best_score,
        "threshold_sweep": {
            f"{t:g}": float(s) for t, s in zip(sweep.threshs, sweep.scores, strict=True)
        },
        "per_class": per_class,
        "written": ["threshold.png", "per_class.png"],
    }
