"""Notebook 05's helpers: tasks prepared once, data variants per loss, every model scored on every task, in-batch views."""
import math

import pytest
import torch
from datasets import Dataset

from helpers import crosseval as X
from helpers import inbatch as B
from helpers.models import load_model
from helpers.training import TrainConfig


@pytest.fixture(scope="module")
def tasks():
    return X.prepare_tasks(train_size=16, eval_size=12, scale="smoke")


@pytest.fixture(scope="module")
def model():
    return load_model(device="cpu", max_seq_length=32)


def test_tasks_are_small_and_snli_test_keeps_only_its_premises_hypotheses(tasks):
    assert set(tasks) == set(X.EVAL_TASKS)
    assert len(tasks["stsb"].train) == 16 and tasks["stsb"].test_evaluator.scores.__len__() == 12
    snli = tasks["snli"]
    assert snli.columns == ["anchor", "positive", "negative"]
    ir = X.snli_test_ir(12, seed=0)
    assert len(ir["queries"]) == 12 and len(ir["corpus"]) == 39  # seeded: every hypothesis of the 12 drawn premises
    assert all(ir["relevant"][q] <= set(ir["corpus"]) for q in ir["queries"])
    assert len(snli.test_evaluator.queries) == 12 and len(snli.test_evaluator.corpus) == len(ir["corpus"])


def test_data_variants_for_each_loss(tasks):
    snli = tasks["snli"]
    pairs = X.without_negatives(snli)
    assert pairs.columns == ["anchor", "positive"] and len(pairs.train) == len(snli.train)
    assert X.without_negatives(pairs) is pairs
    scored = X.scored_pairs(snli)
    assert scored.columns == ["sentence1", "sentence2", "score"] and len(scored.train) == 2 * len(snli.train)
    positives = {(a, p) for a, p in zip(snli.train["anchor"], snli.train["positive"])}
    for s1, s2, y in zip(scored.train["sentence1"], scored.train["sentence2"], scored.train["score"]):
        assert y == (1.0 if (s1, s2) in positives else 0.0)
    assert sorted(set(scored.dev["score"])) == [0.0, 1.0]
    with pytest.raises(ValueError, match="triplets"):
        X.scored_pairs(pairs)
    code = tasks["codesearch"]  # pairs only: each anchor gets another row's positive, never its own
    with_neg = X.other_negatives(code, seed=3)
    assert with_neg.train.column_names == ["anchor", "positive", "negative"] and len(with_neg.train) == len(code.train)
    assert all(r["negative"] != r["positive"] for r in with_neg.train)
    assert sorted(with_neg.train["negative"]) == sorted(code.train["positive"])  # every positive used once
    assert X.other_negatives(with_neg) is with_neg
    assert len(X.scored_pairs(with_neg).train) == 2 * len(code.train)


@pytest.mark.slow
def test_every_model_is_scored_on_every_task(tasks, model):
    row = X.untuned_row(tasks, max_seq_length=32, model=model)
    assert set(X.EVAL_TASKS) <= set(row) and all(0 < row[t] <= 1 for t in X.EVAL_TASKS)
    assert model.max_seq_length == 32
    base = TrainConfig(batch_size=8, max_steps=1, evals_per_epoch=0, max_seq_length=32, learning_rate=1e-4)
    arms = {"cosent stsb": (base.replace(loss="cosent"), tasks["stsb"]),
            "cosent snli pairs": (base.replace(loss="cosent"), X.scored_pairs(tasks["snli"])),
            "mnrl snli": (base.replace(loss="mnrl"), tasks["snli"])}
    rows = X.cross_grid(arms, [0], tasks, max_seq_length=32, progress=False)
    for arm, (r,) in rows.items():
        assert r["steps"] == 1 and r["stop"] == "finished" and math.isfinite(r["train_loss"])
        assert all(0 < r[t] <= 1 for t in X.EVAL_TASKS)
    m = X.matrix(rows, baseline=row, delta=True)
    assert list(m.columns) == list(X.EVAL_TASKS) and list(m.index) == list(arms)
    assert m.loc["mnrl snli", "stsb"] == pytest.approx(rows["mnrl snli"][0]["stsb"] - row["stsb"])
    table = X.matrix_table(rows, baseline=row, own={"mnrl snli": "snli"})
    assert table.loc["mnrl snli", X.TASK_LABELS["snli"]].endswith(" *") and "untuned" in table.index
    assert list(X.arm_cost_table(rows).columns) == ["seeds", "steps", "train s", "eval s"]


def test_inbatch_loss_by_hand_equals_the_librarys(tasks, model):
    batch = B.first_batch(tasks["snli"].train, batch_size=6)
    assert len(batch["anchor"]) == 6 and len(set(batch["anchor"])) == 6
    view = B.inbatch_view(model, batch, scales=(1.0, 20.0))
    assert view["sims"].shape == (6, 12)
    for s, v in view["scales"].items():
        assert v["loss"] == pytest.approx(v["library_loss"], abs=1e-5)
        assert v["probs"].sum(axis=1) == pytest.approx([1.0] * 6, abs=1e-5)
    table = B.scale_table(view)
    assert table.loc[1.0, "chance loss"] == pytest.approx(math.log(12), abs=1e-4)
    # a sharper softmax (higher scale) puts more of the push on the hardest negative
    assert table.loc[20.0, "hardest negative's share of the push"] > table.loc[1.0, "hardest negative's share of the push"]


def test_no_duplicates_sampler_removes_false_negatives():
    anchors = [f"premise {i // 4}" for i in range(32)]  # every premise four times, like SNLI
    ds = Dataset.from_dict({"anchor": anchors, "positive": [f"hypothesis {i}" for i in range(32)]})
    stats = B.duplicate_stats(ds, batch_size=8, seed=0)
    assert stats.loc["default", "rows"] == 32 and stats.loc["no duplicates", "rows"] == 32
    assert stats.loc["default", "false negatives in the epoch"] > 0
    assert stats.loc["no duplicates", "false negatives in the epoch"] == 0
    assert B.false_negatives(ds, [0, 1, 4]) == 2  # rows 0 and 1 share their premise (counted both ways)
    rep = B.repeated_texts(ds)
    assert rep == {"rows": 32, "distinct": 8, "rows sharing their text": 32, "most repeated": 4, "example": "premise 0"}


def test_plots_draw(tasks, model):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from helpers import curve_plots as P

    delta = pd.DataFrame({"stsb": [0.01, -0.02], "snli": [-0.03, 0.0]}, index=["a", "b"])
    P.plot_cross_matrix(delta, own={"a": "stsb"})
    view = B.inbatch_view(model, B.first_batch(tasks["snli"].train, batch_size=4), scales=(1.0, 20.0))
    P.plot_inbatch(view)
    plt.close("all")
    assert torch.get_num_threads() >= 1
