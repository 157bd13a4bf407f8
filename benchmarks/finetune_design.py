"""The measurements behind `fine_tune(base_lr="auto")`'s plan (lrkit/stages.py), on real photos.

Per seed: one range test on the frozen ImageNet body (EfficientNet-Lite0, Pets sample split of
pets_common.split), the head stage at its `auto` suggestion, then from that same state every
unfrozen variant: (hi, lr_mult) chosen by a rule on the head's rate, or by a second range test.
Prints each variant's validation error per seed and the mean.

    PYTHONPATH=src python benchmarks/finetune_design.py --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import lrkit
from bench_vs_fastai import lrkit_pets_loaders
from lrkit.stages import short_test
from pets_common import EPOCHS

SHORT_NUM_IT = 40  # a cheaper range test, recorded beside the full one (its suggestions only)

# name -> (where hi comes from, factor on it, lr_mult)
VARIANTS = {
    "rt2-auto/100": ("rt2", 1.0, 100.0),
    "rt2-auto/10": ("rt2", 1.0, 10.0),
    "head/2,100": ("head", 0.5, 100.0),
    "head/2,10": ("head", 0.5, 10.0),
    "head/5,10": ("head", 0.2, 10.0),
    "head/2,3": ("head", 0.5, 3.0),
    "head/1,10": ("head", 1.0, 10.0),
    "head/1,3": ("head", 1.0, 3.0),
}


def learner(seed: int) -> lrkit.Learner:
    dls = lrkit_pets_loaders(seed)  # the side-by-side benchmark's loaders, stats included
    torch.manual_seed(seed)
    return lrkit.vision_learner(
        dls,
        "efficientnet_lite0",
        pretrained="imagenet",
        metrics=[lrkit.error_rate],
        progress=False,
    )


def run_seed(seed: int, num_it: int, variants: list[str]) -> dict:
    learn = learner(seed)
    out: dict = {"seed": seed}
    t0 = time.perf_counter()
    rt1 = learn.lr_find(num_it=num_it, progress=False)
    out["rt1_s"] = time.perf_counter() - t0
    out["rt1"] = {k: float(v) for k, v in rt1.suggestions.items()}
    t0 = time.perf_counter()
    short = learn.lr_find(progress=False, **short_test(SHORT_NUM_IT))
    out["rt1_short_s"] = time.perf_counter() - t0
    out["rt1_short"] = {k: float(v) for k, v in short.suggestions.items()}
    head = rt1.require("auto")
    t0 = time.perf_counter()
    learn.fit_one_cycle(1, head)
    out["head_s"] = time.perf_counter() - t0
    out["head_error"] = learn.validate()["error_rate"]
    with tempfile.TemporaryDirectory() as tmp:
        state = learn.save(Path(tmp) / "head")
        learn.unfreeze()
        t0 = time.perf_counter()
        rt2 = learn.lr_find(num_it=num_it, progress=False)
        out["rt2_s"] = time.perf_counter() - t0
        out["rt2"] = {k: float(v) for k, v in rt2.suggestions.items()}
        for name in variants:
            source, factor, mult = VARIANTS[name]
            hi = factor * (rt2.require("auto") if source == "rt2" else head)
            learn.load(state)
            learn.unfreeze()
            t0 = time.perf_counter()
            learn.fit_one_cycle(EPOCHS, slice(hi / mult, hi))
            out[name] = {
                "error": learn.validate()["error_rate"],
                "hi": hi,
                "s": time.perf_counter() - t0,
            }
            print(seed, name, out[name], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--num-it", type=int, default=100)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = [run_seed(s, args.num_it, args.variants) for s in args.seeds]
    for row in rows:
        print(json.dumps(row))
    for name in args.variants:
        errors = [row[name]["error"] for row in rows]
        print(
            f"{name:14s} "
            + " ".join(f"{e:.3f}" for e in errors)
            + f"  mean {sum(errors) / len(errors):.3f}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
