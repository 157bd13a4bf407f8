"""DDP with 2 gloo processes on 127.0.0.1: the Learner, validation, outputs, lr_find, the CLI.

One launch of tests/ddp_worker.py (two processes started the way torchrun starts them: RANK,
WORLD_SIZE, MASTER_ADDR/PORT in the environment) runs every library scenario; the tests read
what each rank wrote. The CLI test launches `torchrun -m lrkit`.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ddp_worker import N_TRAIN, make_dls
from learner_fixtures import TinyNet, body_head
from lrkit import Learner, accuracy

# Two processes that each import torch: ~25 s of CPU, over a minute of wall time on the shared
# 2-core machine; so outside the fast suite, and in CI (pytest -m "not slow or ci").
pytestmark = [pytest.mark.slow, pytest.mark.ci]

TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ddp_env(rank: int | None = None, port: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", PYTHONPATH=f"{SRC}:{TESTS}")
    if rank is not None:
        env.update(
            RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
        )  # fmt: skip
    return env


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("ddp")
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(TESTS / "ddp_worker.py"), str(out)],
            env=ddp_env(rank, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    logs = [proc.communicate(timeout=240)[0] for proc in procs]
    for proc, log in zip(procs, logs, strict=True):
        assert proc.returncode == 0, log[-3000:]
    return out, [json.loads((out / f"result_rank{r}.json").read_text()) for r in (0, 1)]


def test_parameters_and_buffers_are_bit_identical_across_ranks(ranks):
    out, _ = ranks
    first, second = (torch.load(out / f"state_rank{r}.pt") for r in (0, 1))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_each_rank_sees_a_disjoint_shard_in_a_new_order_every_epoch(ranks):
    _, results = ranks
    epochs = [result["seen"] for result in results]
    assert len(epochs[0]) == len(epochs[1]) == 3  # one frozen epoch, two unfrozen
    for mine, theirs in zip(*epochs, strict=True):
        assert len(mine) == len(theirs) == N_TRAIN // 2
        assert not set(mine) & set(theirs)
        assert set(mine) | set(theirs) == set(range(N_TRAIN))
    for seen in epochs:
        assert seen[0] != seen[1] != seen[2]  # the sampler's epoch was set every epoch
        assert set(seen[0]) != set(seen[1])  # new shards too, not only a new order


def test_validate_over_two_ranks_equals_one_process_on_the_same_weights(ranks):
    out, results = ranks
    model = TinyNet()
    model.load_state_dict(torch.load(out / "state_rank0.pt"))
    single = Learner(
        model, make_dls(), nn.CrossEntropyLoss(), metrics=[accuracy], splitter=body_head,
        device="cpu", progress=False,
    ).validate()  # fmt: skip
    for result in results:
        assert result["validate"]["accuracy"] == single["accuracy"]  # 23 items, none twice
        assert result["validate"]["valid_loss"] == pytest.approx(single["valid_loss"], rel=1e-6)


def test_outputs_are_written_once_by_rank_zero(ranks):
    out, results = ranks
    written = sorted(p.name for p in out.iterdir() if not p.name.startswith(("result", "state")))
    assert written == ["log_rank0.csv", "model_rank0.lrk", "model_rank0.pt", "vision_rank0.lrk"]
    assert len((out / "log_rank0.csv").read_text().splitlines()) == 1 + 2  # header, 2 epochs
    for result in results:  # every rank is told where rank 0 wrote
        assert result["saved"] == str(out / "model_rank0.pt")
        assert result["exported"] == str(out / "model_rank0.lrk")
        assert result["vision_exported"] == str(out / "vision_rank0.lrk")  # a VisionLearner too


def test_lr_find_stops_at_the_same_step_with_the_same_suggestions(ranks):
    _, results = ranks
    first, second = (result["lr_find"] for result in results)
    assert first["n_points"] == second["n_points"] > 0
    assert first["stop_reason"] == second["stop_reason"]
    assert first["losses"] == second["losses"]
    assert first["suggestions"].keys() == second["suggestions"].keys()
    for rule, value in first["suggestions"].items():
        other = second["suggestions"][rule]
        assert value == other or (math.isnan(value) and math.isnan(other)), rule


def test_a_stop_on_one_rank_stops_every_rank_at_the_same_batch(ranks):
    _, results = ranks
    assert results[0]["stop"][:3] == results[1]["stop"][:3] == [0, 1, True]
    assert results[0]["stop"][3] == "another process stopped training"
    assert results[0]["nan"] == results[1]["nan"] == [0, 2, True]


TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside python")
def test_cli_train_under_torchrun_writes_once_and_prints_one_json(tmp_path):
    from data_fixtures import fake_fashion_files

    data, out = tmp_path / "fashion", tmp_path / "out"
    data.mkdir()
    for name, content in fake_fashion_files(n_train=200, n_test=41).items():
        (data / name).write_bytes(content)
    argv = [
        str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "lrkit", "train",
        "--dataset", "fashion-mnist", "--data", str(data), "--bs", "50", "--device", "cpu",
        "--seed", "1", "--epochs", "1", "--lr", "valley", "--num-it", "10", "--out", str(out),
        "--json",
    ]  # fmt: skip
    done = subprocess.run(
        argv, env=ddp_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(done.stdout)  # one JSON object: rank 1 printed nothing
    assert record["model"] == str(out / "model.lrk")
    assert record["data"]["n_valid"] == 41
    assert sorted(p.name for p in out.iterdir()) == [
        "confusion_matrix.png", "losses.png", "lr_find_train.png", "metrics.csv", "model.lrk",
        "schedule.png", "top_losses.png", "train.json",
    ]  # fmt: skip
    assert len((out / "metrics.csv").read_text().splitlines()) == 2  # header, one epoch
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fashion", "out"]  # no lrkit-out
    assert done.stderr.count("wrote ") == 1  # the summary line comes from rank 0 alone
