"""The one training step (lrkit.step) that the Learner's loop and the range test share."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from learner_fixtures import make_dls, make_learner
from lrkit.step import autocast_dtype, precision_name


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        (None, None),
        ("fp32", None),
        ("float32", None),
        (torch.float32, None),
        ("bf16", "bf16"),
        ("BF16", "bf16"),
        ("bfloat16", "bf16"),
        (torch.bfloat16, "bf16"),
        ("fp16", "fp16"),
        ("half", "fp16"),
        (torch.float16, "fp16"),
    ],
)
def test_every_spelling_of_a_precision_has_one_name(spec, name):
    assert precision_name(spec) == name


def test_precision_names_map_to_autocast_dtypes():
    assert autocast_dtype("fp32") is None
    assert autocast_dtype("bf16") is torch.bfloat16
    assert autocast_dtype("fp16") is torch.float16
    with pytest.raises(ValueError, match="mixed_precision must be None, 'fp32', 'bf16' or 'fp16'"):
        precision_name("fp8")
    with pytest.raises(ValueError, match=r"got torch\.int8"):
        precision_name(torch.int8)


def test_learner_takes_the_same_precision_names_as_the_range_test():
    assert make_learner(mixed_precision="fp32").options.mixed_precision is None
    assert make_learner(mixed_precision=torch.bfloat16).options.mixed_precision == "bf16"


def test_fit_refuses_a_loss_that_is_not_a_scalar_with_its_shape():
    learn = make_learner()
    learn.loss_fn = nn.CrossEntropyLoss(reduction="none")
    with pytest.raises(ValueError, match=r"loss_fn must return a scalar tensor, got \(16,\)"):
        learn.fit(1, 1e-3)


def _first_step_params(learn, run) -> list[torch.Tensor]:
    """The parameters right after the first optimizer step `run(learn)` takes."""
    seen: list[list[torch.Tensor]] = []

    def hook(opt, args, kwargs):
        if not seen:
            seen.append([p.detach().clone() for p in learn.model.parameters()])

    handle = learn.opt.register_step_post_hook(hook)
    try:
        run(learn)
    finally:
        handle.remove()
    return seen[0]


def test_range_test_and_fit_take_the_same_first_step():
    # accumulation over 2 batches and clipping: the range test's first step (lr = start_lr)
    # moves the weights exactly as the first step of a fit at that constant lr
    def build():
        learn = make_learner(dls=make_dls(bs=16, shuffle=False), opt="sgd", wd=0.0)
        learn.options.accum_steps, learn.options.grad_clip = 2, 0.05
        return learn

    lr = 0.5
    found = _first_step_params(
        build(), lambda learn: learn.lr_find(start_lr=lr, end_lr=50, num_it=10)
    )
    fitted = _first_step_params(build(), lambda learn: learn.fit(1, lr))
    assert all(torch.equal(a, b) for a, b in zip(found, fitted, strict=True))
