"""The Optuna search on a subset (notebook 06): a real tiny study that prunes, the rebuild of the best trial, resuming."""
import math

import optuna
import pytest
from optuna.trial import TrialState
from transformers import TrainerCallback

from helpers import search as S
from helpers.schedules import lr_curve
from helpers.training import TrainConfig, train

# A wider rate range than the default space, so that one trial can be hopeless; batches that give 2+ steps.
SPACE = {**S.SPACE, "learning_rate": ("log", 1e-6, 1e-2), "batch_size": ("choice", (8, 16))}
GOOD = {"learning_rate": 5e-5, "warmup_fraction": 0.25, "schedule": "linear", "batch_size": 8,
        "weight_decay": 0.01, "freeze_layers": 3, "layerwise_decay": 0.9}
HOPELESS = {**GOOD, "learning_rate": 8e-3, "warmup_fraction": 0.0, "schedule": "constant", "freeze_layers": 0,
            "layerwise_decay": 1.0}
# warmup_fraction=0 is an int here, like the trainer's warmup_steps=0 default that truncated 0.164 to 0
BASE = TrainConfig(max_seq_length=32, epochs=1, warmup_fraction=0)


class Interrupt(TrainerCallback):
    """Acts like Ctrl-C in the middle of training (after the first optimizer step)."""

    def on_step_end(self, args, state, control, **kwargs):
        raise KeyboardInterrupt


def settings(task):
    return S.settings_record(S.search_base(BASE).resolved(), SPACE, task)


@pytest.fixture(scope="module")
def stored(sts_small, tmp_path_factory):
    """A real 3-trial study in SQLite: a good trial, a hopeless one, and one the sampler proposes."""
    folder = tmp_path_factory.mktemp("study")
    storage = folder / "study.db"
    study = S.create_study("tiny", storage, pruner="halving", seed=0, settings=settings(sts_small))
    study.enqueue_trial(GOOD)
    study.enqueue_trial(HOPELESS)
    objective = S.Objective(BASE, sts_small, SPACE, save_best_to=folder / "best")
    report = S.run_search(study, objective, 3, progress=False)
    return {"study": study, "storage": storage, "report": report, "folder": folder}


def test_rebuild_casts_by_the_space_not_by_the_base():
    cfg = S.config_from_params(BASE, {"warmup_fraction": 0.164, "freeze_layers": 2, "batch_size": 16})
    assert cfg.warmup_fraction == 0.164 and isinstance(cfg.warmup_fraction, float)
    assert cfg.freeze_layers == 2 and cfg.batch_size == 16
    with pytest.raises(ValueError, match="not in the search space"):
        S.config_from_params(BASE, {"epochs": 3})


def test_space_and_sizes_are_checked():
    with pytest.raises(ValueError, match="not a TrainConfig setting"):
        S.check_space({"learning_rat": ("log", 1e-5, 1e-4)})
    with pytest.raises(ValueError, match="low < high"):
        S.check_space({"learning_rate": ("log", 1e-4, 1e-5)})
    with pytest.raises(ValueError, match="kind"):
        S.check_space({"learning_rate": ("normal", 1e-5, 1e-4)})
    assert S.subset_size(5749) == 575 and S.subset_size(1000) == 100 and S.subset_size(96) == 32
    assert S.subset_size(20) == 20
    with pytest.raises(ValueError, match="fraction"):
        S.subset_size(100, 1.5)
    with pytest.raises(ValueError, match="Unknown pruner"):
        S.make_pruner("asha")


@pytest.mark.slow
def test_the_pruner_prunes_the_hopeless_trial(stored):
    study = stored["study"]
    good, hopeless = study.trials[0], study.trials[1]
    assert good.state == TrialState.COMPLETE and good.intermediate_values
    assert hopeless.state == TrialState.PRUNED
    assert hopeless.user_attrs["pruned_at"] == 1  # the pruner stopped it at its first evaluation
    assert hopeless.intermediate_values[1] < good.intermediate_values[1]
    assert hopeless.user_attrs["steps"] < good.user_attrs["steps"]  # it stopped early: less compute
    assert stored["report"].finished == 3 and stored["report"].pruned >= 1
    table = S.trials_table(study)
    assert list(table.index)[0] == study.best_trial.number and "subset score" in table


@pytest.mark.slow
def test_best_trial_rebuilds_into_a_final_run_with_the_same_settings(stored, sts_small, fast):
    study = stored["study"]
    best = study.best_trial
    w = best.params["warmup_fraction"]
    assert 0 < w < 1 and w != int(w)  # fractional: the trap would have made it 0
    cfg = S.best_config(study, BASE, SPACE)
    r = train(cfg, data=sts_small, **{**fast, "batch_size": cfg.batch_size})
    for name, value in best.params.items():
        assert r.config[name] == value, name
    assert r.learning_rate == pytest.approx(best.params["learning_rate"])
    assert r.lr == pytest.approx(lr_curve(cfg.schedule, cfg.learning_rate, r.steps, w), rel=1e-6, abs=1e-12)
    assert r.lr[0] < max(r.lr)  # the warm-up really happened
    assert (stored["folder"] / "best" / "modules.json").exists()  # the best model so far was saved


@pytest.mark.slow
def test_a_stored_study_resumes_after_an_interrupt(stored, sts_small):
    storage = stored["storage"]
    study = S.create_study("tiny", storage, pruner="halving", seed=0, settings=settings(sts_small))
    assert len(S.finished(study)) == 3  # loaded from SQLite, not started again
    with pytest.raises(KeyboardInterrupt):
        S.run_search(study, S.Objective(BASE, sts_small, SPACE, callbacks=[Interrupt()]), 4, progress=False)
    assert study.trials[-1].state == TrialState.FAIL and len(S.finished(study)) == 3
    study = S.create_study("tiny", storage, pruner="halving", seed=0, settings=settings(sts_small))
    report = S.run_search(study, S.Objective(BASE, sts_small, SPACE), 4, progress=False)
    assert report.new_trials == 1 and report.finished == 4
    again = S.run_search(study, S.Objective(BASE, sts_small, SPACE), 4, progress=False)
    assert again.new_trials == 0  # already complete: nothing runs
    sampled = [t.params for t in S.finished(study)[2:]]
    assert sampled[0] != sampled[1]  # the resumed sampler did not replay its first proposal


@pytest.mark.slow
def test_a_different_search_under_the_same_name_is_refused(stored, sts_small):
    other = S.settings_record(S.search_base(BASE.replace(epochs=2)).resolved(), SPACE, sts_small)
    with pytest.raises(S.StudyMismatch, match="epochs"):
        S.create_study("tiny", stored["storage"], settings=other)


@pytest.mark.slow
def test_transfer_helpers(stored):
    study = stored["study"]
    top, bottom = S.pick_for_transfer(study, top=1, bottom=1)
    picked = top + bottom
    assert top[0].number == study.best_trial.number and bottom[0].state == TrialState.PRUNED
    assert S.transfer_counts(14) == (3, 2) and S.transfer_counts(4) == (2, 2)
    assert math.isfinite(S.subset_score(picked[-1]))
    assert S.storage_url("sqlite:///x.db") == "sqlite:///x.db"
    assert isinstance(S.make_pruner("hyperband", 4), optuna.pruners.HyperbandPruner)


# ----------------------------------------------------------------------------- a search killed with SIGKILL


def _trial_states(db) -> tuple[int, int]:
    """(finished trials, running trials whose process is recorded) in a study's SQLite file, read without Optuna."""
    import sqlite3

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        states = [s for (s,) in con.execute("SELECT state FROM trials")]
        running = con.execute("SELECT COUNT(*) FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
                              "WHERE t.state = 'RUNNING' AND a.key = 'pid'").fetchone()[0]
    finally:
        con.close()
    return sum(s in ("COMPLETE", "PRUNED") for s in states), running


@pytest.mark.slow
def test_a_search_killed_with_sigkill_resumes_to_the_trials_it_was_asked_for(tmp_path):
    """Killed during a trial and rerun at once (inside the heartbeat's grace period): 3 of 3 trials, not 2."""
    import contextlib
    import json
    import os
    import sqlite3
    import subprocess
    import sys
    import time
    from pathlib import Path

    from helpers import cli

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "out"
    args = ["search", "--space", "broad", "--train-size", "40", "--trials", "3", "--scale", "smoke", "--max-seq-length", "32",
            "--no-progress", "--output", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORKSHOP_SCALE": "smoke", "HF_HUB_OFFLINE": "1"}
    p = subprocess.Popen([sys.executable, "-m", "helpers", *args], cwd=root, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while True:
            assert p.poll() is None, "the search ended before a trial could be killed: " + p.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "no trial started after a finished one within 10 minutes"
            with contextlib.suppress(sqlite3.Error):
                if (out / "study.db").exists() and (lambda f, r: f >= 1 and r >= 1)(*_trial_states(out / "study.db")):
                    break
            time.sleep(0.2)
    finally:
        p.kill()  # SIGKILL: no clean-up, the trial stays RUNNING in the study
        p.wait()
        p.stderr.close()
    finished_before, running = _trial_states(out / "study.db")
    assert running == 1 and finished_before in (1, 2)
    assert cli.main(args) == 0  # at once: well inside the 90 s grace period of the heartbeat
    summary = json.loads((out / "summary.json").read_text())
    assert summary["search"]["finished"] == 3 and summary["search"]["trials"] == 3
    assert summary["search"]["new_trials"] == 3 - finished_before
    study = S.create_study("recipe", out / "study.db")
    states = [t.state for t in study.trials]
    assert states.count(TrialState.FAIL) == 1 and len(S.finished(study)) == 3
    assert TrialState.RUNNING not in states


def test_the_report_says_when_a_search_stopped_short():
    from helpers.recipe import report

    summary = {"status": "finished", "stage": "done",
               "search": {"finished": 5, "trials": 6, "complete": 4, "pruned": 1, "storage": "x", "running": 1}}
    text = report(summary)
    assert "search: 5 of 6 trials finished" in text
    assert "stopped short: 1 trial(s) missing; 1 trial(s) still marked running" in text
    assert "stopped short" not in report({**summary, "search": {**summary["search"], "finished": 6}})


def test_every_stored_study_has_a_heartbeat_and_a_constant_liar(tmp_path):
    from optuna.storages._heartbeat import is_heartbeat_enabled

    study = S.create_study("h", tmp_path / "study.db", worker=1)
    assert is_heartbeat_enabled(study._storage) and study._storage.get_heartbeat_interval() == S.HEARTBEAT_INTERVAL
    assert study.sampler._constant_liar
    # different workers still get different seeds: their random start-up proposals would otherwise be the same
    other = S.create_study("h", tmp_path / "study.db", worker=2)
    assert study.sampler._rng.rng.randint(1 << 30) != other.sampler._rng.rng.randint(1 << 30)


def test_local_workers_keep_sqlite_because_the_journal_storage_has_no_heartbeat():
    """JournalStorage measured 6x faster bookkeeping (0.05 s against 0.33 s per trial, 2 workers; README), which
    a trial of seconds to minutes of training never notices; without a heartbeat a killed worker's trial
    would stay RUNNING for good. When Optuna adds one, measure again."""
    from optuna.storages._heartbeat import BaseHeartbeat

    assert not issubclass(optuna.storages.JournalStorage, BaseHeartbeat)
    assert issubclass(optuna.storages.RDBStorage, BaseHeartbeat)


# --------------------------------------------------------------------------- reading a study: made-up trials

def made_up_study(specs):
    """An in-memory study holding made-up finished trials: (state, value, intermediate values, params, attrs)."""
    from optuna.distributions import CategoricalDistribution

    study = optuna.create_study(direction="maximize")
    for state, value, inter, params, attrs in specs:
        study.add_trial(optuna.trial.create_trial(
            state=state, value=value, intermediate_values=inter, params=params, user_attrs=attrs,
            distributions={k: CategoricalDistribution((8, 16, 32)) for k in params}))
    return study


def result(dev=0.5, test=0.5, wall=1.0, n=0):
    """A TrainResult with the numbers the search readers use (one evaluation, its test score, seconds, pairs)."""
    import helpers as hp

    return hp.TrainResult(config={}, metric="Spearman", evals=[{"step": 4, "epoch": 1.0, "metric": dev, "loss": None}],
                          test_metric=test, wall_time=wall, train_examples=n)


C, P, F = TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL


def test_rank_correlation_on_made_up_scores():
    # subset scores 0.1, 0.2, 0.3 and a pruned trial whose LAST evaluation (0.4) counts, not its first (0.05)
    study = made_up_study([(C, 0.1, {1: 0.1}, {}, {}), (C, 0.2, {1: 0.2}, {}, {}), (C, 0.3, {1: 0.3}, {}, {}),
                           (P, None, {1: 0.05, 2: 0.4}, {}, {})])
    trials = study.trials
    assert [S.subset_score(t) for t in trials] == [0.1, 0.2, 0.3, 0.4]
    same = {t.number: result(test=s) for t, s in zip(trials, (0.6, 0.7, 0.8, 0.9))}
    assert S.rank_correlation(trials, same) == (pytest.approx(1.0), pytest.approx(0.0, abs=1e-12))
    reversed_ = {t.number: result(test=s) for t, s in zip(trials, (0.9, 0.8, 0.7, 0.6))}
    assert S.rank_correlation(trials, reversed_)[0] == pytest.approx(-1.0)
    # one swap among 4: rho = 1 - 6 x (1 + 1) / (4 x 15) = 0.8; t = 0.8 x sqrt(2 / 0.36) on 2 degrees of freedom,
    # two-sided p = 1 - t / sqrt(t^2 + 2) = 1 - 0.8 = 0.2
    swapped = {t.number: result(test=s) for t, s in zip(trials, (0.6, 0.8, 0.7, 0.9))}
    rho, p = S.rank_correlation(trials, swapped)
    assert rho == pytest.approx(0.8, rel=1e-12) and p == pytest.approx(0.2, rel=1e-9)
    # key="dev" reads the re-runs' validation scores instead: the same swap there, the test ranking agreeing
    by_dev = {t.number: result(dev=d, test=s) for t, d, s in zip(trials, (0.6, 0.8, 0.7, 0.9), (0.6, 0.7, 0.8, 0.9))}
    assert S.rank_correlation(trials, by_dev, key="dev")[0] == pytest.approx(0.8)
    assert S.rank_correlation(trials, by_dev)[0] == pytest.approx(1.0)


def test_transfer_check_reruns_each_trial_with_its_own_settings_and_a_test_score(monkeypatch):
    larger = object()  # the larger data, passed through untouched
    study = made_up_study([(C, 0.3, {1: 0.3}, {"batch_size": 16}, {}), (P, None, {1: 0.1}, {"batch_size": 32}, {})])
    calls = []

    def fake_train(cfg, data=None, progress=True, **kwargs):
        calls.append((cfg, data, progress, kwargs))
        r = result(test=0.1 * len(calls), n=320)
        r.model = object()
        return r

    from helpers import transfer

    monkeypatch.setattr(transfer, "train", fake_train)  # where transfer_check looks it up (search re-exports it)
    base = TrainConfig(max_seq_length=32, final_test=False, output_dir="somewhere", batch_size=8)
    out = S.transfer_check(study.trials, base, larger, {"batch_size": ("choice", (8, 16, 32))}, progress=False)
    assert list(out) == [0, 1] and [r.test_metric for r in out.values()] == [0.1, 0.2]
    assert all(r.model is None for r in out.values())  # models dropped: a transfer check keeps numbers, not weights
    assert [c[0].batch_size for c in calls] == [16, 32]  # each trial's own parameters
    for cfg, data, progress, kwargs in calls:
        assert cfg.final_test is True and cfg.output_dir is None  # scored on test, nothing saved
        assert cfg.max_seq_length == 32 and data is larger and progress is False and not kwargs
    assert S.transfer_check([], base, larger, progress=False) == {} and len(calls) == 2


def test_cost_comparison_measures_the_multiplier_from_completed_reruns():
    study = made_up_study([
        (C, 0.3, {1: 0.3}, {}, {"wall_s": 10.0, "train_examples": 100}),
        (C, 0.2, {1: 0.2}, {}, {"wall_s": 20.0, "train_examples": 100}),
        (P, None, {1: 0.1}, {}, {"wall_s": 5.0, "train_examples": 100}),
        (F, None, {}, {}, {"wall_s": 100.0}),  # failed: neither counted nor timed
    ])
    t = study.trials
    reruns = {0: result(wall=40.0, n=1000), 1: result(wall=60.0, n=1000), 2: result(wall=50.0, n=1000)}
    c = S.cost_comparison(study, t[:3], reruns)
    # the ratios of the completed trials, 40 / 10 and 60 / 20 (the pruned one stopped early: it does not count)
    assert c == {"trials": 3, "pruned": 1, "subset pairs": 100, "larger pairs": 1000, "subset search s": 35.0,
                 "measured multiplier": 3.5, "estimated larger-data search s": 35.0 * 3.5,
                 "transfer re-runs s": 150.0}
    only_pruned = S.cost_comparison(study, [t[2]], {2: reruns[2]})  # nothing measured: the data ratio, 1000 / 100
    assert only_pruned["measured multiplier"] == 10.0 and only_pruned["estimated larger-data search s"] == 350.0
    assert only_pruned["transfer re-runs s"] == 50.0
    bare = made_up_study([(P, None, {1: 0.1}, {}, {})])  # no seconds, no pair counts recorded
    unknown = S.cost_comparison(bare, bare.trials, {0: result(wall=5.0, n=1000)})
    assert unknown["subset search s"] == 0.0 and unknown["subset pairs"] == 0
    assert math.isnan(unknown["measured multiplier"]) and math.isnan(unknown["estimated larger-data search s"])


def test_pruning_savings_counts_steps_run_against_steps_planned():
    study = made_up_study([
        (C, 0.3, {1: 0.3}, {"batch_size": 16}, {"train_examples": 320, "steps": 25}),  # 20 steps an epoch
        (P, None, {1: 0.1}, {"batch_size": 32}, {"train_examples": 320, "steps": 5}),  # 10 steps an epoch
        (P, None, {1: 0.1}, {"batch_size": 16}, {"steps": 7}),  # no pair count recorded: left out
        (C, 0.2, {1: 0.2}, {}, {"train_examples": 320, "steps": 9}),  # batch size not searched: left out
        (F, None, {}, {"batch_size": 16}, {"train_examples": 320, "steps": 3}),  # failed: not finished
    ])
    s = S.pruning_savings(study, epochs=1.25)
    # planned: 20 x 1.25 = 25, and 10 x 1.25 = 12.5, rounded up to 13
    assert s == {"steps run": 30, "steps without pruning": 38, "saved": pytest.approx(1 - 30 / 38, rel=1e-12)}
    assert S.pruning_savings(made_up_study([]), epochs=1) == {"steps run": 0, "steps without pruning": 0, "saved": 0.0}


def test_a_storage_another_process_is_creating_is_opened_on_retry(monkeypatch):
    """torchrun's ranks open a new SQLite study at once; the loser of the race sees 'table ... already exists'
    from the tables the winner just made, and must open the storage on its next try, not fail."""
    import optuna

    from helpers import tuning

    calls = []

    def racing(url, **kwargs):
        calls.append(url)
        if len(calls) == 1:
            raise RuntimeError("(sqlite3.OperationalError) table studies already exists")
        return "storage"

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    monkeypatch.setattr(tuning.time, "sleep", lambda s: None)
    assert tuning._storage("sqlite:///x.db") == "storage" and len(calls) == 2
    calls.clear()  # the other loser's message: the winner had already stamped the schema's version
    monkeypatch.setattr(optuna.storages, "RDBStorage", lambda url, **k: calls.append(url) or (
        (_ for _ in ()).throw(RuntimeError("(sqlite3.IntegrityError) UNIQUE constraint failed: "
                                           "alembic_version.version_num")) if len(calls) == 1 else "storage"))
    assert tuning._storage("sqlite:///x.db") == "storage" and len(calls) == 2
    monkeypatch.setattr(optuna.storages, "RDBStorage", lambda url, **k: (_ for _ in ()).throw(RuntimeError("bad")))
    with pytest.raises(ValueError, match="Cannot open the study storage"):
        tuning._storage("sqlite:///x.db")


def test_transfer_table_ends_with_the_untuned_row():
    study = made_up_study([(C, 0.3, {1: 0.3}, {}, {}), (P, None, {1: 0.1, 2: 0.2}, {}, {})])
    runs = {t.number: result(dev=0.5 + t.number / 10, test=0.6 + t.number / 10) for t in study.trials}
    table = S.transfer_table(study.trials, runs, untuned={"dev": 0.45, "test": 0.55})
    assert list(table.index) == [0, 1, "untuned"]
    assert list(table["subset score"])[:2] == [0.3, 0.2]  # a pruned trial: its last evaluation
    assert table.loc["untuned", "larger data: test"] == 0.55 and math.isnan(table.loc["untuned", "subset score"])
    assert list(S.transfer_table(study.trials, runs).index) == [0, 1]


def test_the_recipes_spaces_and_their_grids():
    """Notebook 07's narrow space is a grid of the usual rates; the broad one caps freezing below the model's depth."""
    narrow = S.recipe_space("narrow")
    assert S.grid_of(narrow) == {"learning_rate": [2e-5, 3e-5, 5e-5]} and S.grid_size(S.grid_of(narrow)) == 3
    broad = S.recipe_space("broad", layers=6)
    assert S.grid_of(broad) is None and S.grid_size(None) is None and broad["freeze_layers"] == ("int", 0, 4)
    assert S.recipe_space("broad", layers=3)["freeze_layers"] == ("int", 0, 2)
    assert "freeze_layers" not in S.recipe_space("broad", layers=1)
    assert S.grid_size({"a": [1, 2], "b": [1, 2, 3]}) == 6
    # a grid study tries each combination once, whatever order its seed gives
    study = S.create_study("grid", None, seed=3, grid=S.grid_of(narrow))
    study.optimize(lambda t: S.suggest(t, narrow)["learning_rate"], n_trials=3)
    assert sorted(t.params["learning_rate"] for t in study.trials) == [2e-5, 3e-5, 5e-5]
