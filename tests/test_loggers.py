"""TensorBoard and W&B logging, read back from the files the real packages write."""

from __future__ import annotations

import json
import math
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist

import lrkit
from learner_fixtures import make_learner
from lrkit import TensorBoardCallback, WandbCallback, accuracy

N_ITER = 6  # 96 training items in batches of 16


def train_with(cb) -> tuple:
    """lr_find, then fit_one_cycle(2) and fit(1): the result, and over both fits the
    Recorder's losses, lrs, momentums (last group) and epoch log; the learner."""
    learn = make_learner(metrics=[accuracy], cbs=[cb])
    found = learn.lr_find(num_it=20, progress=False)
    losses, lrs, moms, logs = [], [], [], []
    for run in (lambda: learn.fit_one_cycle(2, 1e-2), lambda: learn.fit(1, [1e-4, 1e-3])):
        run()
        losses += learn.recorder.losses
        lrs += learn.recorder.lrs
        moms += learn.recorder.moms
        logs += learn.recorder.log
    cb.close()
    return found, (losses, lrs, moms, logs), learn


# ----------------------------------------------------------------- TensorBoard


def read_events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalar(acc, tag: str) -> tuple[list[int], np.ndarray]:
    events = acc.Scalars(tag)
    return [e.step for e in events], np.array([e.value for e in events])


def test_tensorboard_logs_training_lr_find_and_config(tmp_path):
    cb = TensorBoardCallback(tmp_path / "tb", config={"seed": 7, "note": "test run"})
    found, (losses, lrs, moms, logs), learn = train_with(cb)
    acc = read_events(tmp_path / "tb")
    tags = acc.Tags()

    steps, values = scalar(acc, "train/loss")  # one per batch over both fits, steps continuing
    assert steps == list(range(1, 3 * N_ITER + 1))
    np.testing.assert_allclose(values, losses, rtol=1e-6)
    for g in range(2):
        np.testing.assert_allclose(scalar(acc, f"lr/group_{g}")[1], [r[g] for r in lrs], rtol=1e-6)
    np.testing.assert_allclose(scalar(acc, "mom/group_1")[1], moms, rtol=1e-6)
    assert min(moms) == pytest.approx(0.85)  # one-cycle's momentum dip is there

    steps, values = scalar(acc, "valid/loss")  # per epoch, at the step of its last batch
    assert steps == [N_ITER, 2 * N_ITER, 3 * N_ITER]
    np.testing.assert_allclose(values, [row["valid_loss"] for row in logs], rtol=1e-6)
    np.testing.assert_allclose(scalar(acc, "valid/accuracy")[1], [r["accuracy"] for r in logs])
    np.testing.assert_allclose(scalar(acc, "train/epoch_loss")[1], [r["train_loss"] for r in logs])
    assert scalar(acc, "epoch")[1].tolist() == [1, 2, 3]
    assert scalar(acc, "fit/n_epoch") == ([0, 2 * N_ITER], pytest.approx([2, 1]))

    # the range test (run before any fit): curve against its iteration, suggestions at step 0
    steps, values = scalar(acc, "lr_find/loss")
    assert steps == list(range(len(found.losses)))
    np.testing.assert_allclose(values, found.losses, rtol=1e-6)
    np.testing.assert_allclose(scalar(acc, "lr_find/lr")[1], found.lrs, rtol=1e-6)
    for rule, lr in found.suggestions.items():
        if math.isfinite(lr):
            assert scalar(acc, f"lr_find/suggestion/{rule}") == ([0], pytest.approx([lr], 1e-6))
    assert "lr_find/plot" in tags["images"]
    plot = acc.Images("lr_find/plot")[0]
    assert plot.width > 300 and plot.height > 200

    config = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| seed | 7 |" in config and '| note | "test run" |' in config
    assert '| model | "TinyNet" |' in config and "| n_groups | 2 |" in config
    assert learn.recorder.losses  # the Recorder kept working beside the logger


def test_tensorboard_logs_a_range_test_run_elsewhere_apart(tmp_path):
    cb = TensorBoardCallback(tmp_path / "tb")
    learn = make_learner(cbs=[cb])
    learn.lr_find(num_it=12, progress=False)
    elsewhere = lrkit.lr_find(
        learn.model, learn.dls.train, learn.loss_fn, num_it=14, progress=False
    )
    cb.log_lr_find(elsewhere)
    cb.close()
    acc = read_events(tmp_path / "tb")
    assert len(acc.Scalars("lr_find/loss")) == 12
    np.testing.assert_allclose(scalar(acc, "lr_find_2/loss")[1], elsewhere.losses, rtol=1e-6)
    with pytest.raises(RuntimeError, match="closed"):
        cb.log_lr_find(elsewhere)


def test_only_rank_zero_logs(tmp_path, monkeypatch):
    """A real one-process group: rank 0 logs; a rank that is not 0 writes nothing at all."""
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:0", rank=0, world_size=1)
    try:
        cb = TensorBoardCallback(tmp_path / "rank0")
        make_learner(cbs=[cb]).fit(1, 1e-3)
        cb.close()
        assert len(read_events(tmp_path / "rank0").Scalars("train/loss")) == N_ITER
        monkeypatch.setattr(dist, "get_rank", lambda group=None: 1)
        cb = TensorBoardCallback(tmp_path / "rank1")
        learn = make_learner(cbs=[cb])
        learn.fit(1, 1e-3)
        learn.lr_find(num_it=12, progress=False)
        cb.close()
        assert not (tmp_path / "rank1").exists() and cb.writer is None
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    ("make", "package", "extra"),
    [
        (lambda p: TensorBoardCallback(p), "tensorboard", "tensorboard"),
        (lambda p: WandbCallback(mode="offline", dir=p), "wandb", "wandb"),
    ],
)
def test_missing_package_is_one_line_naming_the_extra(tmp_path, monkeypatch, make, package, extra):
    monkeypatch.setitem(sys.modules, package, None)  # as if it were not installed
    with pytest.raises(ImportError, match=rf"^[^\n]*pip install 'lrkit\[{extra}\]'$"):
        make(tmp_path)


def test_import_lrkit_needs_neither_package():
    import subprocess

    code = "import sys, lrkit; print('wandb' in sys.modules, 'tensorboard' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    assert lrkit.callbacks.TensorBoardCallback is TensorBoardCallback


def test_wandb_mode_is_checked(tmp_path):
    with pytest.raises(ValueError, match="'ofline'"):
        WandbCallback(mode="ofline", dir=tmp_path)


# ----------------------------------------------------------------- W&B, offline


def wandb_records(path: Path):
    """The protobuf records of a .wandb file (LevelDB log format: 32 KiB blocks of chunks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", "not a W&B run file"
    pos, chunks = 7, []  # 7-byte file header: magic, 2-byte identifier, version
    while pos + 7 <= len(data):
        room = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])  # crc, length, type
        if room < 7 or (length == 0 and kind == 0):  # block padding
            pos += room if room < 7 else 7
            continue
        chunks.append(data[pos + 7 : pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            yield record


def finished_records(path: Path, timeout_s: float = 60.0) -> list:
    """The run file's records once its exit record is written: wandb's service writes the
    file in the background, and `finish()` may return before it is done."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = list(wandb_records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        assert time.monotonic() < deadline, f"{path} got no exit record in {timeout_s} s"
        time.sleep(0.1)


def test_wandb_offline_run_holds_history_summary_config_and_lr_find(tmp_path, monkeypatch):
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "env"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cb = WandbCallback(project="lrkit-test", mode="offline", dir=tmp_path, config={"seed": 7})
    found, (losses, lrs, _, logs), _ = train_with(cb)

    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    history: dict[int, dict] = {}
    config, summary = {}, {}
    for record in finished_records(next(runs[0].glob("run-*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = history.setdefault(record.history.step.num, {})
            row.update(
                {
                    i.key or "/".join(i.nested_key): json.loads(i.value_json)
                    for i in record.history.item
                }
            )
        elif kind == "run":
            config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "summary":
            summary.update(
                {i.key or "/".join(i.nested_key): i.value_json for i in record.summary.update}
            )

    assert config["seed"] == 7 and config["model"] == "TinyNet" and config["n_groups"] == 2
    batch_steps = [s for s in sorted(history) if "train/loss" in history[s]]
    assert batch_steps == list(range(1, 3 * N_ITER + 1))
    np.testing.assert_allclose([history[s]["train/loss"] for s in batch_steps], losses)
    np.testing.assert_allclose([history[s]["lr/group_0"] for s in batch_steps], [r[0] for r in lrs])
    assert "mom/group_1" in history[1]
    epoch_rows = [history[s] for s in (N_ITER, 2 * N_ITER, 3 * N_ITER)]
    np.testing.assert_allclose(
        [r["valid/loss"] for r in epoch_rows], [r["valid_loss"] for r in logs]
    )
    assert [r["epoch"] for r in epoch_rows] == [1, 2, 3]
    assert "valid/accuracy" in epoch_rows[0]

    # the range test (before any fit, at step 0): its table, figure and suggestions
    assert history[0]["lr_find/curve/_type"] == "table-file"
    table = json.loads((runs[0] / "files" / history[0]["lr_find/curve/path"]).read_text())
    assert table["columns"] == ["lr", "loss", "raw_loss"]
    np.testing.assert_allclose(np.array(table["data"])[:, 1], found.losses)
    assert (runs[0] / "files" / history[0]["lr_find/plot/path"]).stat().st_size > 0
    valley = found.suggestions["valley"]
    assert float(summary["lr_find/suggestion/valley"]) == pytest.approx(valley)
