"""One rank of the DDP tests: run by `torchrun --nproc-per-node 2 tests/ddp_worker.py OUT`.

Every scenario writes what the tests check into OUT as JSON or torch files named by rank;
tests/test_ddp.py launches it once and asserts on the files.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from learner_fixtures import TinyNet, body_head, make_data
from lrkit import Callback, CSVLogger, DataLoaders, Learner, accuracy, distributed
from lrkit.vision import VisionLearner

N_TRAIN, N_VALID, BS = 40, 23, 4  # an odd validation set: blocks of 12 and 11 items


def make_dls() -> DataLoaders:
    """Train items carry their index as a third tensor, so each rank can say what it saw."""
    x, y = make_data(N_TRAIN + N_VALID)
    index = torch.arange(N_TRAIN + N_VALID)
    train = DataLoader(
        TensorDataset(x[:N_TRAIN], y[:N_TRAIN], index[:N_TRAIN]),
        batch_size=BS,
        shuffle=True,
        generator=torch.Generator().manual_seed(1),
    )
    valid = DataLoader(TensorDataset(x[N_TRAIN:], y[N_TRAIN:]), batch_size=BS)
    return DataLoaders(train, valid, vocab=["a", "b", "c"])


class Seen:
    """forward hook that records the indices of the training items each epoch."""

    def __init__(self) -> None:
        self.epochs: list[list[int]] = []

    def __call__(self, model: nn.Module, batch):
        if len(batch) == 3 and self.epochs:  # a training batch of a fit: (x, y, index)
            self.epochs[-1].extend(batch[2].tolist())
        return model(batch[0]), batch[1]


class NewEpoch(Callback):
    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    def before_epoch(self, learn) -> None:
        self.seen.epochs.append([])


class StopOnRank1(Callback):
    """What a Ctrl-C reaching rank 1 alone does: it stops at batch 1 of epoch 0."""

    def after_batch(self, learn) -> None:
        if distributed.rank() == 1 and learn.iter == 1:
            learn.stop, learn.interrupted = True, True


def learner(seen: Seen, **kwargs) -> Learner:
    torch.manual_seed(distributed.rank())  # different inits: DDP must start from rank 0's
    return Learner(
        TinyNet(),
        make_dls(),
        nn.CrossEntropyLoss(),
        metrics=[accuracy],
        splitter=body_head,
        device="cpu",
        progress=False,
        forward=seen,
        **kwargs,
    )


def main(out: Path) -> None:
    rank = distributed.rank()
    seen = Seen()
    learn = learner(seen, cbs=[NewEpoch(seen), CSVLogger(out / f"log_rank{rank}.csv")])
    found = learn.lr_find(num_it=30)
    learn.freeze()
    learn.fit_one_cycle(1, 1e-2)
    learn.unfreeze()
    learn.fit_one_cycle(2, 1e-2)
    state = {k: v.detach().clone() for k, v in learn.model.state_dict().items()}
    torch.save(state, out / f"state_rank{rank}.pt")
    saved = learn.save(out / f"model_rank{rank}.pt")
    exported = learn.export(out / f"model_rank{rank}.lrk")
    vision = VisionLearner(
        TinyNet(), make_dls(), nn.CrossEntropyLoss(), splitter=body_head, device="cpu"
    )
    vision_exported = vision.export(out / f"vision_rank{rank}.lrk", pickle_model=True)
    result = {
        "seen": seen.epochs,
        "validate": learn.validate(),
        "n_iter": learn.n_iter,
        "saved": str(saved),
        "exported": str(exported),
        "vision_exported": str(vision_exported),
        "lr_find": {
            "stop_reason": found.stop_reason,
            "n_points": len(found.lrs),
            "losses": found.losses.tolist(),
            "suggestions": found.suggestions,
        },
    }

    stopper = learner(Seen(), cbs=[StopOnRank1()])
    stopper.fit(2, 1e-3)
    result["stop"] = [stopper.epoch, stopper.iter, stopper.interrupted, stopper.stop_reason]

    calls = [0]

    def nan_on_rank1(prediction, target):
        calls[0] += 1
        loss = nn.functional.cross_entropy(prediction, target)
        return loss * math.nan if rank == 1 and calls[0] == 3 else loss

    diverging = learner(Seen())
    diverging.loss_fn = nan_on_rank1
    diverging.fit(1, 1e-3)
    result["nan"] = [diverging.epoch, diverging.iter, diverging.diverged]
    (out / f"result_rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    with distributed.torchrun_session():
        assert dist.get_world_size() == 2
        main(Path(sys.argv[1]))
