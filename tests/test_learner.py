"""The Learner's training verbs: layer groups, freezing, learning-rate specs, schedules, stops."""

from __future__ import annotations

import math
import multiprocessing
import os
import signal

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from learner_fixtures import (
    TinyNet,
    clone_state,
    make_data,
    make_dls,
    make_learner,
    three_groups,
)
from lrkit import DataLoaders
from lrkit.callbacks import Callback
from lrkit.learner import Learner
from lrkit.metrics import accuracy, error_rate
from lrkit.schedule import one_cycle_lr, one_cycle_mom


class Snapshots(Callback):
    """Records the frozen index, the peak lrs and the lrs of each fit, and weights per batch."""

    def __init__(self) -> None:
        self.fits: list[dict] = []
        self.weights: list[dict[str, torch.Tensor]] = []

    def before_fit(self, learn):
        self.fits.append({"frozen_idx": learn.frozen_idx, "lrs": [], "moms": []})

    def after_batch(self, learn):
        self.fits[-1]["lrs"].append([g["lr"] for g in learn.opt.param_groups])
        self.fits[-1]["moms"].append(learn.momentum)
        self.weights.append(clone_state(learn.model))


def test_optimizer_groups_follow_layer_groups():
    learn = make_learner(splitter=three_groups)
    assert learn.n_groups == 3
    for params, group in zip(learn.layer_groups, learn.opt.param_groups, strict=True):
        assert [id(p) for p in params] == [id(p) for p in group["params"]]
    assert learn.frozen_idx == 0


def test_optimizer_factory_gets_the_layer_groups():
    learn = make_learner(opt=lambda groups: torch.optim.RMSprop(groups, momentum=0.5))
    assert isinstance(learn.opt, torch.optim.RMSprop) and len(learn.opt.param_groups) == 2
    learn.fit_one_cycle(1, 1e-3)
    assert learn.recorder.moms[0] == pytest.approx(0.95)  # RMSprop momentum is cycled too
    with pytest.raises(ValueError, match="must keep the 2 param groups"):
        make_learner(opt=lambda groups: torch.optim.SGD(TinyNet().parameters(), lr=0.1))
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        make_learner(opt="lion")


def test_bad_splitter_fails_at_construction():
    with pytest.raises(ValueError, match=r"in no layer group: head\.weight, head\.bias"):
        make_learner(splitter=lambda m: [m.body])


def test_plain_pair_of_loaders_is_accepted():
    dls = make_dls()
    learn = Learner(TinyNet(), (dls.train, dls.valid), nn.CrossEntropyLoss(), progress=False)
    learn.fit(1, 1e-3)
    assert len(learn.recorder.log) == 1


def test_frozen_body_unchanged_while_head_moves():
    learn = make_learner(metrics=[accuracy])
    learn.freeze()
    assert learn.frozen_idx == 1
    assert not learn.model.body[0].weight.requires_grad
    assert learn.model.body[1].weight.requires_grad  # BatchNorm stays trainable
    before = clone_state(learn.model)
    learn.fit_one_cycle(2, 1e-2)
    after = learn.model.state_dict()
    assert torch.equal(before["body.0.weight"], after["body.0.weight"])
    assert torch.equal(before["body.0.bias"], after["body.0.bias"])
    assert learn.model.body[0].weight.grad is None  # frozen: no gradient computed at all
    assert not torch.equal(before["head.weight"], after["head.weight"])
    assert not torch.equal(before["body.1.weight"], after["body.1.weight"])


def test_train_bn_false_freezes_batchnorm_too():
    learn = make_learner(train_bn=False)
    learn.freeze()
    before = clone_state(learn.model)
    learn.fit(1, 1e-2)
    assert torch.equal(before["body.1.weight"], learn.model.body[1].weight)
    assert not torch.equal(before["head.weight"], learn.model.head.weight)


def test_freeze_to_and_unfreeze():
    learn = make_learner(splitter=three_groups, train_bn=False)
    learn.freeze_to(2)
    assert learn.frozen_idx == 2
    assert [p.requires_grad for p in learn.model.parameters()] == [False] * 4 + [True] * 2
    learn.freeze_to(-2)
    assert learn.frozen_idx == 1
    learn.unfreeze()
    assert learn.frozen_idx == 0
    assert all(p.requires_grad for p in learn.model.parameters())
    with pytest.raises(ValueError, match=r"freeze_to\(3\) is out of range for 3 layer groups"):
        learn.freeze_to(3)


def test_freeze_with_a_single_group_says_why():
    learn = make_learner(splitter=None)
    with pytest.raises(ValueError, match=r"single layer group.*pass a splitter"):
        learn.freeze()
    learn.unfreeze()  # freeze_to(0) is fine with one group


def test_one_cycle_shape_per_group_and_geometric_peaks():
    learn = make_learner(splitter=three_groups)
    snaps = Snapshots()
    learn.fit_one_cycle(2, slice(1e-4, 1e-2), div=25, div_final=1e5, pct_start=0.25, cbs=[snaps])
    lrs = torch.tensor(snaps.fits[0]["lrs"], dtype=torch.float64)  # (steps, groups)
    assert lrs.shape == (12, 3)
    peaks = lrs.max(dim=0).values
    assert peaks.tolist() == pytest.approx([1e-4, 1e-3, 1e-2])
    # every group keeps the same ratio to the last group at every step
    ratios = lrs / lrs[:, -1:]
    assert torch.allclose(ratios, torch.tensor([0.01, 0.1, 1.0], dtype=torch.float64))
    last = lrs[:, -1]
    assert last[0].item() == pytest.approx(1e-2 / 25)
    assert last[3].item() == pytest.approx(1e-2)  # pct 3/12 = pct_start: the peak
    assert last[-1].item() == pytest.approx(one_cycle_lr(11 / 12, 1e-2, 25, 1e5, 0.25))
    top = int(last.argmax())
    assert all(last[i] <= last[i + 1] for i in range(top))
    assert all(last[i] >= last[i + 1] for i in range(top, len(last) - 1))
    moms = snaps.fits[0]["moms"]
    assert moms[0] == pytest.approx(0.95)
    assert min(moms) == moms[top]  # momentum lowest where the lr peaks
    assert moms[-1] == pytest.approx(one_cycle_mom(11 / 12, (0.95, 0.85, 0.95), 0.25))
    assert learn.recorder.lrs == snaps.fits[0]["lrs"]


def test_fit_takes_one_lr_per_group_and_refuses_wrong_length():
    learn = make_learner()
    snaps = Snapshots()
    learn.fit(1, [1e-4, 1e-3], cbs=[snaps])
    assert all(lrs == [1e-4, 1e-3] for lrs in snaps.fits[0]["lrs"])
    before = clone_state(learn.model)
    with pytest.raises(ValueError, match=r"got 3 learning rates .* for 2 layer groups"):
        learn.fit(1, [1e-4, 1e-3, 1e-2])
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in before.items())


def test_fine_tune_runs_two_stages():
    learn = make_learner(splitter=three_groups)
    snaps = Snapshots()
    learn.fine_tune(2, base_lr=2e-3, freeze_epochs=1, cbs=[snaps])
    frozen, unfrozen = snaps.fits
    assert frozen["frozen_idx"] == 2 and unfrozen["frozen_idx"] == 0
    assert learn.frozen_idx == 0
    stage1 = torch.tensor(frozen["lrs"], dtype=torch.float64)
    assert len(stage1) == 6
    # slice(2e-3): 2e-4 for all but the last; pct_start 0.99 -> still warming up at the end
    assert stage1[0].tolist() == pytest.approx([2e-4 / 25, 2e-4 / 25, 2e-3 / 25])
    end = [one_cycle_lr(5 / 6, peak, 25, 1e5, 0.99) for peak in (2e-4, 2e-4, 2e-3)]
    assert stage1[-1].tolist() == pytest.approx(end)
    assert all(stage1[i, 2] < stage1[i + 1, 2] for i in range(5))
    stage2 = torch.tensor(unfrozen["lrs"], dtype=torch.float64)
    assert len(stage2) == 12
    # base_lr halved: slice(1e-5, 1e-3) over 3 groups -> 1e-5, 1e-4, 1e-3; div 5
    assert stage2.max(dim=0).values.tolist() == pytest.approx([1e-5, 1e-4, 1e-3], rel=0.05)
    assert stage2[0].tolist() == pytest.approx([2e-6, 2e-5, 2e-4])
    assert len(learn.recorder.log) == 2  # the recorder holds the last fit


def test_validation_loss_and_metrics_match_a_manual_pass():
    learn = make_learner(metrics=[accuracy, error_rate])
    learn.fit(1, 1e-3)
    log = learn.recorder.log[0]
    assert list(log) == ["epoch", "train_loss", "valid_loss", "accuracy", "error_rate", "time"]
    x, y = learn.dls.valid.dataset.tensors
    learn.model.eval()
    with torch.no_grad():
        out = learn.model(x)
    assert log["valid_loss"] == pytest.approx(nn.functional.cross_entropy(out, y).item(), rel=1e-5)
    assert log["accuracy"] == pytest.approx((out.argmax(1) == y).float().mean().item())
    assert log["error_rate"] == pytest.approx(1 - log["accuracy"])
    assert learn.validate() == {k: pytest.approx(log[k]) for k in list(log)[2:5]}


def test_get_preds_returns_outputs_and_targets_of_the_valid_set():
    learn = make_learner()
    x, y = learn.dls.valid.dataset.tensors
    learn.model.eval()
    with torch.no_grad():
        expected = learn.model(x)
    learn.model.train()
    preds, targets = learn.get_preds()
    assert torch.allclose(preds, expected, atol=1e-6)
    assert torch.equal(targets, y)
    assert learn.model.training  # mode restored
    learn.dls.valid = None
    with pytest.raises(ValueError, match="no validation loader"):
        learn.get_preds()


@pytest.mark.parametrize("valid", ["none", "empty"])
def test_empty_validation_trains_and_says_so(valid):
    dls = make_dls()
    empty = DataLoader(TensorDataset(torch.zeros(0, 8), torch.zeros(0, dtype=torch.long)))
    dls = DataLoaders(dls.train, None if valid == "none" else empty)
    learn = make_learner(dls=dls, metrics=[accuracy])
    with pytest.warns(UserWarning, match="no validation data: training without validation"):
        learn.fit(2, 1e-3)
    assert learn.recorder.values("valid_loss") == [None, None]
    assert learn.recorder.values("accuracy") == [None, None]
    assert all(math.isfinite(v) for v in learn.recorder.values("train_loss"))


class NanAt:
    """Cross-entropy that returns NaN on the `at`-th training call (counting from 0)."""

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0

    def __call__(self, pred, target):
        loss = nn.functional.cross_entropy(pred, target)
        if not pred.requires_grad:  # validation: not counted
            return loss
        self.calls += 1
        return loss * float("nan") if self.calls - 1 == self.at else loss


def test_nan_loss_stops_with_epoch_and_batch_keeping_last_good_weights():
    learn = make_learner()
    learn.loss_fn = NanAt(8)  # 6 batches per epoch: epoch 1, batch 2
    snaps = Snapshots()
    with pytest.warns(RuntimeWarning, match=r"the loss is nan at epoch 1, batch 2"):
        learn.fit(3, 1e-3, cbs=[snaps])
    assert learn.diverged and learn.stop
    assert "last finite step" in learn.stop_reason
    assert len(snaps.weights) == 8
    final = learn.model.state_dict()
    assert all(torch.equal(v, final[k]) for k, v in snaps.weights[-1].items())
    assert len(learn.recorder.log) == 1  # the broken epoch is not validated
    assert all(p.grad is None for p in learn.model.parameters())
    learn.loss_fn = nn.CrossEntropyLoss()
    learn.fit(1, 1e-3)  # still usable
    assert not learn.diverged


class _InfGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


def test_non_finite_gradient_stops_before_the_step():
    learn = make_learner()
    calls = []

    def loss_fn(pred, target):
        calls.append(pred.requires_grad)
        if sum(calls) == 3:
            pred = _InfGrad.apply(pred)
        return nn.functional.cross_entropy(pred, target)

    learn.loss_fn = loss_fn
    snaps = Snapshots()
    with pytest.warns(RuntimeWarning, match=r"gradient norm is (inf|nan) at epoch 0, batch 2"):
        learn.fit(1, 1e-3, cbs=[snaps])
    final = learn.model.state_dict()
    assert all(torch.equal(v, final[k]) for k, v in snaps.weights[-1].items())
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())


class InterruptAt(Callback):
    """Sends this process a SIGINT (Ctrl-C) after batch `at` of the first epoch."""

    def __init__(self, at: int) -> None:
        self.at = at

    def after_batch(self, learn):
        if learn.epoch == 0 and learn.iter == self.at:
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_stops_after_the_current_batch():
    learn = make_learner()
    previous = signal.getsignal(signal.SIGINT)
    learn.fit(3, 1e-3, cbs=[InterruptAt(2)])  # no KeyboardInterrupt escapes
    assert learn.interrupted
    assert "interrupted (Ctrl-C) at epoch 0, batch 2" in learn.stop_reason
    assert len(learn.recorder.losses) == 3
    assert signal.getsignal(signal.SIGINT) is previous
    learn.fit(1, 1e-3)  # the model is still usable
    assert not learn.interrupted and len(learn.recorder.losses) == 6


class StopAfter(Callback):
    def __init__(self, batches: int) -> None:
        self.batches = batches

    def after_batch(self, learn):
        if len(learn.recorder.losses) == self.batches:
            learn.stop, learn.stop_reason = True, "test says stop"


def test_a_callback_stop_flag_ends_training_after_that_batch():
    learn = make_learner()
    learn.fit(3, 1e-3, cbs=[StopAfter(8)])
    assert len(learn.recorder.losses) == 8
    assert learn.stop_reason == "test says stop"
    assert len(learn.recorder.log) == 1


def test_dict_batches_with_a_forward_hook():
    x, y = make_dls().train.dataset.tensors
    batches = [{"features": x[i : i + 16], "label": y[i : i + 16]} for i in range(0, 96, 16)]

    def forward(model, batch):
        return model(batch["features"]), batch["label"]

    learn = make_learner(dls=DataLoaders(batches, batches[:2]), forward=forward)
    learn.fit(1, 1e-3)
    assert len(learn.recorder.losses) == 6
    assert learn.recorder.log[0]["valid_loss"] is not None


class TerminalCtrlC(Callback):
    """Ctrl-C as a terminal sends it: SIGINT to the DataLoader workers and to this process."""

    def after_batch(self, learn):
        if learn.epoch == 0 and learn.iter == 1:
            self.workers = multiprocessing.active_children()
            for child in self.workers:
                os.kill(child.pid, signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.slow
def test_ctrl_c_with_loader_workers_stops_cleanly():
    x, y = make_data(96)
    train = DataLoader(TensorDataset(x, y), batch_size=8, num_workers=2)
    learn = make_learner(dls=DataLoaders(train, make_dls().valid))
    ctrl_c = TerminalCtrlC()
    learn.fit(2, 1e-3, cbs=[ctrl_c])
    assert len(ctrl_c.workers) == 2
    assert learn.interrupted and len(learn.recorder.losses) == 2
    learn.fit(1, 1e-3)  # fresh workers: training goes on
    assert len(learn.recorder.losses) == 12
