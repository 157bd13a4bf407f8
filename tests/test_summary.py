"""`learn.summary()`: layers with output shapes and groups, the frozen state in plain words, and
no trace left by the probe batch."""

from __future__ import annotations

import torch

from learner_fixtures import make_learner, three_groups
from lrkit.summary import PROBE_ITEMS, frozen_words, layer_rows


def test_the_frozen_state_in_plain_words():
    learn = make_learner(splitter=three_groups)
    assert frozen_words(learn) == "nothing frozen: all 3 groups train"
    learn.freeze()
    assert frozen_words(learn).startswith(
        "2 of 3 groups frozen (groups 0–1); only the head (group 2) trains"
    )
    assert frozen_words(learn).endswith("BatchNorm in the frozen groups still trains")
    assert "frozen up to" not in learn.summary()
    split = make_learner(splitter=lambda m: [m.body[0], m.head, m.body[1]])  # BN group last
    split.freeze_to(1)
    assert frozen_words(split) == "1 of 3 groups frozen (group 0); groups 1–2 train"
    one = make_learner(splitter=lambda m: [m])
    assert frozen_words(one) == "nothing frozen: the one group trains"


def test_layers_with_shapes_params_and_groups():
    learn = make_learner(splitter=three_groups)
    rows = {row.name: row for row in layer_rows(learn)}
    assert list(rows) == ["body", "body.0", "body.1", "body.2", "head"]
    assert (rows["body"].groups, rows["body.1"].groups, rows["head"].groups) == ("0-1", "1", "2")
    assert rows["body.0"].shape == "(16, 16)" and rows["head"].shape == "(16, 3)"  # batch of 16
    assert (rows["body.0"].params, rows["body.2"].params, rows["body.2"].trains) == (144, 0, "-")
    learn.freeze_to(1)
    rows = {row.name: row for row in layer_rows(learn)}
    assert (rows["body.0"].trains, rows["body"].trains, rows["head"].trains) == (
        "no",
        "part",
        "yes",
    )


def test_the_probe_runs_a_few_items_and_leaves_no_trace():
    learn = make_learner(splitter=three_groups)
    seen = []
    learn.model.head.register_forward_hook(lambda m, inputs, out: seen.append(len(inputs[0])))
    learn.model.body[1].eval()  # a layer kept in eval mode while the model trains
    rng = torch.random.get_rng_state()
    learn.summary()
    assert seen == [PROBE_ITEMS]
    assert learn.model.training and learn.model.head.training and not learn.model.body[1].training
    assert torch.equal(rng, torch.random.get_rng_state())
