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


def test_a_different_search_under_the_same_name_is_refused(stored, sts_small):
    other = S.settings_record(S.search_base(BASE.replace(epochs=2)).resolved(), SPACE, sts_small)
    with pytest.raises(S.StudyMismatch, match="epochs"):
        S.create_study("tiny", stored["storage"], settings=other)


def test_transfer_helpers(stored):
    study = stored["study"]
    top, bottom = S.pick_for_transfer(study, top=1, bottom=1)
    picked = top + bottom
    assert top[0].number == study.best_trial.number and bottom[0].state == TrialState.PRUNED
    assert S.transfer_counts(14) == (3, 2) and S.transfer_counts(4) == (2, 2)
    assert math.isfinite(S.subset_score(picked[-1]))
    assert S.storage_url("sqlite:///x.db") == "sqlite:///x.db"
    assert isinstance(S.make_pruner("hyperband", 4), optuna.pruners.HyperbandPruner)
