"""Training options: gradient accumulation, clipping, bf16 autocast, channels_last, compile."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from learner_fixtures import clone_state, make_data, make_dls, make_learner
from lrkit import DataLoaders
from lrkit.learner import Learner


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def _fit_mlp(bs: int, accum_steps: int) -> dict[str, torch.Tensor]:
    dls = make_dls(bs=bs, shuffle=False)
    learn = Learner(
        _mlp(), dls, nn.CrossEntropyLoss(), opt="sgd", progress=False, accum_steps=accum_steps
    )
    learn.fit(2, 0.1)
    return clone_state(learn.model)


def test_accumulating_two_half_batches_equals_one_full_batch():
    full = _fit_mlp(bs=16, accum_steps=1)
    halves = _fit_mlp(bs=8, accum_steps=2)
    single = _fit_mlp(bs=8, accum_steps=1)
    for key, value in full.items():
        assert torch.allclose(value, halves[key], atol=1e-6), key
    assert not all(torch.allclose(v, single[k], atol=1e-6) for k, v in full.items())


def test_leftover_batches_at_the_end_of_an_epoch_still_step():
    # 6 batches with accum_steps 4: one step after batch 3, one for the 2 left over
    learn = Learner(_mlp(), make_dls(), nn.CrossEntropyLoss(), progress=False, accum_steps=4)
    steps = []
    learn.opt.register_step_post_hook(lambda opt, args, kwargs: steps.append(1))
    learn.fit(1, 1e-3)
    assert len(steps) == 2


def test_grad_clip_bounds_the_step():
    # plain SGD, one batch: the update is lr * clipped gradient, whose norm is the clip value
    x, y = make_data(16)
    dls = DataLoaders(DataLoader(TensorDataset(x, y), batch_size=16))
    learn = Learner(_mlp(), dls, nn.CrossEntropyLoss(), opt="sgd", wd=0.0, progress=False)
    learn.opt.param_groups[0]["momentum"] = 0.0
    learn.options.grad_clip = 1e-3
    before = [p.detach().clone() for p in learn.model.parameters()]
    with pytest.warns(UserWarning, match="no validation data"):
        learn.fit(1, 0.5)
    moved = torch.cat(
        [(p - b).flatten() for p, b in zip(learn.model.parameters(), before, strict=True)]
    )
    assert moved.norm().item() == pytest.approx(0.5 * 1e-3, rel=1e-4)


def test_bf16_autocast_on_cpu():
    learn = make_learner(mixed_precision="bf16")
    dtypes = []
    learn.model.head.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    learn.fit(1, 1e-2)
    assert set(dtypes) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in learn.model.parameters())
    assert all(torch.isfinite(torch.tensor(learn.recorder.losses)))
    assert learn.recorder.log[0]["valid_loss"] is not None


def test_bad_options_are_refused_with_the_value():
    with pytest.raises(ValueError, match="accum_steps must be >= 1, got 0"):
        make_learner(accum_steps=0)
    with pytest.raises(ValueError, match="grad_clip must be > 0 or None, got -1"):
        make_learner(grad_clip=-1.0)


def test_fp16_without_cuda_is_refused():
    with pytest.raises(ValueError, match=r"fp16.*needs a CUDA device"):
        make_learner(mixed_precision="fp16")
    with pytest.raises(ValueError, match="mixed_precision must be"):
        make_learner(mixed_precision="int8")


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))  # (B, 4, H, W)
        return self.fc(x.mean(dim=(2, 3)))  # (B, 4) -> (B, 2)


def _image_dls() -> DataLoaders:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, 8, 8, generator=gen)
    y = (x[:, 0].mean(dim=(1, 2)) > 0).long()
    return DataLoaders(DataLoader(TensorDataset(x, y), batch_size=8), None)


def _fit_cnn(**options) -> tuple[Learner, list[bool]]:
    torch.manual_seed(0)
    learn = Learner(
        TinyCNN(), _image_dls(), nn.CrossEntropyLoss(), opt="sgd", progress=False, **options
    )
    seen = []
    learn.model.conv.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    with pytest.warns(UserWarning, match="no validation data"):
        learn.fit(1, 1e-2)
    return learn, seen


def test_channels_last_model_and_inputs():
    learn, seen = _fit_cnn(channels_last=True)
    assert learn.model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert seen and all(seen)
    reference, plain_seen = _fit_cnn()
    assert not any(plain_seen)
    for key, value in clone_state(reference.model).items():
        assert torch.allclose(value, learn.model.state_dict()[key], atol=1e-5), key


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # raised inside torch's compiler
def test_torch_compile_trains_like_eager():
    eager = make_learner()
    eager.fit(1, 1e-2)
    compiled = make_learner(compile=True)
    compiled.fit(1, 1e-2)
    assert compiled._train_model is not compiled.model
    for key, value in clone_state(eager.model).items():
        assert torch.allclose(value, compiled.model.state_dict()[key], atol=1e-4), key
    assert compiled.recorder.log[0]["valid_loss"] == pytest.approx(
        eager.recorder.log[0]["valid_loss"], rel=1e-4
    )
