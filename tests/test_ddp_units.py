"""The pieces of DDP support that need no second process: splits, argv, a 1-process group."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from learner_fixtures import make_dls, make_learner
from lrkit import distributed
from lrkit.__main__ import rank_argv


@pytest.mark.parametrize("n", [0, 1, 5, 22, 23])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_blocks_cover_every_item_once_in_order(n, world):
    blocks = [distributed.block(n, rank, world) for rank in range(world)]
    assert [i for b in blocks for i in b] == list(range(n))  # rank order = item order
    assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


def test_other_ranks_write_into_their_own_folder():
    assert rank_argv(["train", "--out", "res", "--json"], "/t") == [
        "train",
        "--out",
        "/t",
        "--json",
    ]
    assert rank_argv(["find", "--out=res"], "/t") == ["find", "--out=/t"]
    assert rank_argv(["fine-tune", "--epochs", "1"], "/t") == [
        "fine-tune",
        "--epochs",
        "1",
        "--out",
        "/t",
    ]
    assert rank_argv(["summary", "--arch", "resnet18"], "/t") == ["summary", "--arch", "resnet18"]


@pytest.fixture
def one_process_group():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_a_learner_in_a_process_group_trains_through_ddp(one_process_group, tmp_path):
    learn = make_learner(dls=make_dls())
    models = []
    learn.model.register_forward_pre_hook(lambda m, args: models.append(learn.train_step().model))
    learn.fit(1, 1e-3)
    assert isinstance(models[0], DistributedDataParallel)
    learn.freeze()  # other trainable parameters: DDP is built again for them
    assert learn.train_step().model is not models[0]
    assert learn.save(tmp_path / "m.pt").exists()
    assert learn.validate()["valid_loss"] is not None


def test_sync_bn_on_the_cpu_is_refused_before_training(one_process_group):
    learn = make_learner(sync_bn=True)
    before = [p.detach().clone() for p in learn.model.parameters()]
    with pytest.raises(ValueError, match=r"sync_bn needs a CUDA device per process \(got cpu\)"):
        learn.fit(1, 1e-3)
    assert all(torch.equal(a, b) for a, b in zip(before, learn.model.parameters(), strict=True))
