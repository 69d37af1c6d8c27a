"""Stopping rules replayed on logged curves (notebook 04): synthetic curves, the trainer's own callback, real runs."""
import math
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import EarlyStoppingCallback, TrainerControl

from helpers import stopping as S
from helpers.training import TrainConfig, train


def evals_from(metrics, losses=None, every=2):
    """A logged run: step 0 then one evaluation every ``every`` steps."""
    losses = losses or [1.0] * len(metrics)
    return [{"step": i * every, "epoch": i / 4, "metric": m, "loss": l} for i, (m, l) in enumerate(zip(metrics, losses))]


def hf_stop_index(values, patience, threshold=0.0, higher=True, start=None):
    """Drive transformers' EarlyStoppingCallback exactly as the trainer does; index of the stopping evaluation."""
    cb = EarlyStoppingCallback(early_stopping_patience=patience, early_stopping_threshold=threshold)
    args = SimpleNamespace(greater_is_better=higher, metric_for_best_model="m")
    state = SimpleNamespace(best_metric=None)
    control = TrainerControl()
    if start is not None:  # eval_on_start: the callback sees it, the trainer does not update its best
        cb.on_evaluate(args, state, control, metrics={"eval_m": start})
        if control.should_training_stop:
            return -1
    for i, v in enumerate(values):
        cb.on_evaluate(args, state, control, metrics={"eval_m": v})
        # then Trainer._determine_best_metric
        best = state.best_metric if state.best_metric is not None else (-math.inf if higher else math.inf)
        if (v > best) if higher else (v < best):
            state.best_metric = v
        if control.should_training_stop:
            return i
    return None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=14), st.integers(1, 5), st.sampled_from([0.0, 1.5]),
       st.booleans(), st.integers(0, 6))
def test_patience_replay_matches_the_trainers_callback(values, patience, threshold, higher, start):
    values = [float(v) for v in values]
    expected = hf_stop_index(values, patience, threshold, higher, start=float(start))
    rule = S.patience(patience, threshold)
    assert S.stop_index(values, rule, "metric" if higher else "loss") == expected


def test_patience_counts_evaluations_without_improvement():
    ev = evals_from([0.80, 0.82, 0.85, 0.84, 0.845, 0.83, 0.86, 0.80])
    rp = S.replay(ev, S.patience(3))
    assert rp.fired and rp.stop_step == 10 and rp.kept_step == 4 and rp.kept_dev == 0.85 and rp.evals_seen == 5
    assert S.replay(ev, S.patience(1)).stop_step == 6
    five = S.replay(ev, S.patience(5))
    assert not five.fired and five.stop_step == 14 and five.kept_step == 12 and five.compute == 1.0


def test_the_evaluation_before_training_never_counts_but_can_be_kept():
    ev = evals_from([0.90, 0.80, 0.81, 0.82, 0.83])  # training only improves, but never reaches the untuned score
    rp = S.replay(ev, S.patience(1))
    assert not rp.fired and rp.kept_step == 0 and rp.kept_dev == 0.90


def test_threshold_small_gains_are_not_improvements():
    ev = evals_from([0.5, 0.80, 0.801, 0.802, 0.803])
    assert not S.replay(ev, S.patience(2)).fired
    rp = S.replay(ev, S.patience(2, threshold=0.005))
    assert rp.fired and rp.stop_step == 6 and rp.rule == "patience 2, threshold 0.005"


def test_loss_signal_lower_is_better():
    ev = evals_from([0.8, 0.9, 0.7, 0.6, 0.5], losses=[3.0, 2.0, 2.5, 2.6, 2.7])
    rp = S.replay(ev, S.patience(2), signal="loss")
    assert rp.stop_step == 6 and rp.kept_step == 2 and rp.kept_dev == 0.9
    assert S.replay(ev, S.patience(2), signal="metric").kept_step == 2


def test_generalization_loss_prechelt():
    # errors 1 - metric: .20 .15 .16 .158 .17 -> GL = 6.7% at the third evaluation during training
    ev = evals_from([0.7, 0.80, 0.85, 0.84, 0.842, 0.83])
    assert S.replay(ev, S.gl(5)).stop_step == 6
    assert S.replay(ev, S.gl(10)).stop_step == 10  # 0.17 / 0.15 - 1 = 13.3%
    assert not S.replay(ev, S.gl(20)).fired
    loss_ev = evals_from([0.5] * 4, losses=[1.0, 1.0, 1.04, 1.06])
    assert S.replay(loss_ev, S.gl(5), signal="loss").stop_step == 6


def test_up_needs_successive_rises():
    ev = evals_from([0.5, 0.80, 0.79, 0.81, 0.80, 0.79, 0.78])  # error rises at steps 4, 8, 10, 12
    assert S.replay(ev, S.up(1)).stop_step == 4
    assert S.replay(ev, S.up(2)).stop_step == 10
    assert S.replay(ev, S.up(3)).stop_step == 12
    assert not S.replay(ev, S.up(4)).fired


def test_kept_test_score_and_reference_rows():
    ev = evals_from([0.80, 0.85, 0.83, 0.82, 0.81])
    test = {0: 0.70, 2: 0.74, 4: 0.73, 6: 0.72, 8: 0.71}
    rp = S.replay(ev, S.patience(2), test=test)
    assert (rp.stop_step, rp.kept_step, rp.kept_test) == (6, 2, 0.74) and rp.compute == pytest.approx(0.75)
    last, best = S.reference_rows(ev, test)
    assert last["kept test"] == 0.71 and best["kept test"] == 0.74 and best["kept step"] == 2
    table = S.replay_table(ev, [S.patience(1), "GL5"], signals=("metric", "loss"), test=test)
    assert len(table) == 2 + 4 and table.loc[("patience 1", "metric"), "stops at step"] == 4


def test_thinning_keeps_every_kth_evaluation():
    ev = evals_from([0.5, 0.6, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45, 0.4])
    assert [e["step"] for e in S.thin(ev, 4)] == [0, 8, 16]
    assert [e["step"] for e in S.thin(ev, 2)] == [0, 4, 8, 12, 16]
    assert S.replay(ev, S.patience(3)).stop_step == 10
    assert not S.replay(S.thin(ev, 4), S.patience(3)).fired  # evaluating less often: the same rule waits longer


def test_rule_names_and_bad_rules():
    assert S.parse_rule("patience 3") == S.patience(3) and S.parse_rule("GL5").name == "GL5"
    assert S.parse_rule("up2") == S.up(2)
    for bad in ("sometimes", "patience x"):
        with pytest.raises(ValueError, match="Unknown stopping rule"):
            S.parse_rule(bad)
    with pytest.raises(ValueError):
        S.patience(0)
    with pytest.raises(ValueError):
        S.gl(0)
    with pytest.raises(ValueError):
        S.replay([{"step": 0, "metric": None, "loss": None}], "patience 1")


def fake_run(seed, metrics, every=2):
    ev = evals_from(metrics, every=every)
    return SimpleNamespace(config={"seed": seed}, evals=ev, steps=ev[-1]["step"], test_metric=metrics[-1] - 0.1,
                           test_curve={e["step"]: e["metric"] - 0.1 for e in ev})


def test_prune_seeds_and_replay_over_seeds():
    runs = [fake_run(0, [0.8, 0.81, 0.82, 0.83, 0.84]), fake_run(1, [0.8, 0.78, 0.77, 0.80, 0.81]),
            fake_run(2, [0.8, 0.83, 0.84, 0.85, 0.86])]
    p = S.prune_seeds(runs, at=0.25, keep=1)
    assert p["at step"] == 2 and p["kept seeds"] == [2] and p["best final seed"] == 2 and p["best survived"]
    assert p["compute saved"] == pytest.approx(0.5)  # two of three seeds stop after a quarter
    rows = S.replay_over_seeds(runs, [S.patience(1)])
    assert list(rows) == ["no stopping (last)", "no stopping (best dev)", "patience 1"]
    assert rows["patience 1"][1]["stop"] == 4 and rows["no stopping (last)"][0]["test"] == pytest.approx(0.74)
    assert len(S.rule_summary_table(rows)) == 3
    table = S.per_seed_table(runs)
    assert table.loc[1, "best validation"] == 0.81 and table.loc[1, "best at step"] == 8
    assert S.best_dev(runs[0]) == 0.84 and table.loc[2, "last validation"] == 0.86


def test_disagreements_between_loss_and_metric():
    ev = evals_from([0.80, 0.82, 0.81, 0.83], losses=[2.0, 1.9, 1.8, 1.85])
    d = S.disagreements(ev)
    assert d["best step by metric"] == 6 and d["best step by loss"] == 4
    assert d["steps where they moved in opposite directions"] == [4, 6]


# --------------------------------------------------------------------------- real runs

TOO_HIGH = dict(learning_rate=1e-4, epochs=2, schedule="constant", warmup_fraction=0.0)


@pytest.fixture(scope="module")
def full_run(sts_small, fast):
    """Eight steps at a rate too high for 32 pairs, evaluated every 2 steps, with the test score at each evaluation."""
    return S.train_with_test_curve(TrainConfig(**TOO_HIGH), sts_small, **{**fast, "evals_per_epoch": 2})


@pytest.mark.slow
@pytest.mark.parametrize("signal", ["metric", "loss"])
def test_real_early_stopping_stops_where_the_replay_says(full_run, sts_small, fast, signal):
    assert full_run.steps == 8 and sorted(full_run.test_curve) == [0, 2, 4, 6, 8]
    rule = S.patience(2)
    rp = S.replay(full_run.evals, rule, signal=signal, test=full_run)
    stopped = train(TrainConfig(**TOO_HIGH, early_stopping_patience=2,
                                early_stopping_metric="task" if signal == "metric" else "loss"),
                    data=sts_small, **{**fast, "evals_per_epoch": 2})
    # the same trajectory up to the stop (the test-curve callback changed nothing)
    assert stopped.evals == full_run.evals[: len(stopped.evals)]
    assert stopped.steps == rp.stop_step and stopped.best_step == rp.kept_step
    assert stopped.stop_reason == ("early stopping" if rp.fired and rp.stop_step < full_run.steps else "finished")
    check = S.restored_check(stopped, sts_small.dev_evaluator)
    assert check["equal"], check
    assert check["re-scored dev"] == pytest.approx(rp.kept_dev, abs=1e-6)
    assert stopped.test_metric == pytest.approx(rp.kept_test, abs=1e-6)
    saved = S.compute_saved(stopped, full_run)
    assert saved["steps"] == (rp.stop_step, 8)


def test_plots_draw_from_logged_curves():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from helpers import curve_plots as P

    runs = [fake_run(0, [0.8, 0.82, 0.85, 0.84, 0.83]), fake_run(1, [0.8, 0.81, 0.83, 0.82, 0.84])]
    for r in runs:
        r.metric, r.train_loss = "Spearman", [{"step": k, "epoch": k / 4, "loss": 5.0 - 0.3 * k} for k in range(1, 9)]
    P.plot_validation(runs[0])
    replays = S.replay_all(runs[0].evals, ["patience 1", "GL5"], signals=("metric", "loss"), test=runs[0])
    P.plot_replays(runs[0].evals, replays, test=runs[0].test_curve)
    P.plot_loss_vs_metric(runs[0], replays)
    P.plot_rule_tradeoff(S.replay_over_seeds(runs, ["patience 1", "patience 3"]))
    P.plot_seed_curves(runs, cut_step=2)
    assert len(plt.get_fignums()) == 5
    plt.close("all")


def test_split_overlap_counts_shared_examples_for_pairs_and_queries():
    from datasets import Dataset

    sts = SimpleNamespace(
        columns=["sentence1", "sentence2", "score"],
        train=Dataset.from_dict({"sentence1": ["a", "b"], "sentence2": ["x", "y"], "score": [0.1, 0.2]}),
        dev_evaluator=SimpleNamespace(sentences1=["b", "c"], sentences2=["y", "z"]),
        test_evaluator=SimpleNamespace(sentences1=["c", "d"], sentences2=["z", "w"]))
    out = S.split_overlap(sts)
    assert out["sizes"] == {"train": 2, "validation": 2, "test": 2}
    assert (out["train & validation"], out["validation & test"], out["train & test"]) == (1, 1, 0)
    ir = SimpleNamespace(
        columns=["anchor", "positive"],
        train=Dataset.from_dict({"anchor": ["q1", "q2", "q3"], "positive": ["d1", "d2", "d3"]}),
        dev_evaluator=SimpleNamespace(queries=["q4", "q5"]), test_evaluator=SimpleNamespace(queries=["q3", "q6"]))
    out = S.split_overlap(ir)
    assert out["sizes"] == {"train": 3, "validation": 2, "test": 2}
    assert (out["train & validation"], out["validation & test"], out["train & test"]) == (0, 0, 1)
