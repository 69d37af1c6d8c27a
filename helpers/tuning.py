"""Hyperparameter search on a small subset with Optuna (notebooks 06 and 07, ``python -m helpers search``).

Experiments layer; its plots are in :mod:`helpers.plots.search`, and notebook 06
reads both through :mod:`helpers.search`.

The search is an Optuna study: a TPE sampler proposes a configuration
(:data:`SPACE`: peak rate, warm-up, schedule, batch size, weight decay,
frozen layers, layer-wise decay), :class:`Objective` trains it with
:func:`helpers.train` on a subset of the training data, and
:class:`PruningCallback` reports every validation evaluation to the trial so
that a pruner (successive halving by default) stops the weak ones early.

The study lives in a SQLite file or a database (:func:`create_study`), so a
search that is interrupted resumes where it stopped, can be inspected later,
and can be shared by several worker processes running the same command.
Every database storage has a heartbeat (a killed worker's trial is marked
failed after :data:`GRACE_PERIOD`), and ``TPESampler(constant_liar=True)``
keeps parallel workers from proposing the same point. The trials run through
:func:`helpers.workers.run_search` (one process, several workers, torchrun).

The final run is rebuilt from the best trial's parameters by
:func:`config_from_params`, which casts every value by the search space's own
type. That avoids the trap in ``Trainer.hyperparameter_search``
(docs/references.md, "Hyperparameter search: the warm-up cast"): it casts a suggestion to the type of the argument's
default, so a fractional warm-up of 0.164 became ``int(0.164) == 0``.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, fields, replace
from pathlib import Path

from transformers import TrainerCallback

from .config import get_scale
from .data import PROJECT_ROOT, subset
from .results import save_model_atomically
from .settings import ConfigError, TrainConfig
from .training import train

SUBSET_FRACTION = 0.1  # the syllabus's "small subset": about 10% of the training data
MIN_SUBSET = 32  # never search on fewer pairs than this
SEARCH_EVALS_PER_EPOCH = 2  # validation evaluations per epoch in a trial (the pruner's checkpoints)

# name -> (kind, ...): ("log", low, high) and ("float", low, high) suggest floats, ("int", low, high) whole
# numbers, ("choice", values) one of the values.
SPACE: dict[str, tuple] = {
    "learning_rate": ("log", 5e-6, 2e-4),
    "warmup_fraction": ("float", 0.0, 0.3),
    "schedule": ("choice", ("constant", "linear", "cosine", "wsd")),
    "batch_size": ("choice", (8, 16, 32)),
    "weight_decay": ("float", 0.0, 0.1),
    "freeze_layers": ("int", 0, 4),
    "layerwise_decay": ("float", 0.7, 1.0),
}
# The narrow space (notebook 07): only the peak rates BERT's authors tried for fine-tuning (Devlin et al. 2019,
# appendix A.3), everything else at the common default. Small enough to try every value with trials as long as
# the final run, which on STS-B is what it takes for the search's ranking to hold (docs/references.md).
NARROW_SPACE: dict[str, tuple] = {"learning_rate": ("choice", (2e-5, 3e-5, 5e-5))}
SPACES = ("broad", "narrow")  # the recipe's --space: SPACE or NARROW_SPACE
PRUNERS = ("halving", "hyperband", "median", "none")
HEARTBEAT_INTERVAL, GRACE_PERIOD = 30, 90  # seconds: a trial without a heartbeat for GRACE_PERIOD is marked failed


class StudyMismatch(ValueError):
    """A stored study was made with other settings (data, space, base configuration) than this search (notebook 06)."""


# --------------------------------------------------------------------------- the search space


def check_space(space: dict) -> dict:
    """Return ``space`` if every entry names a :class:`TrainConfig` setting with a valid range, else raise
    (notebook 06)."""
    names = {f.name for f in fields(TrainConfig)}
    if not space:
        raise ValueError("The search space is empty; give at least one setting to search.")
    for name, spec in space.items():
        if name not in names:
            raise ValueError(f"Search space entry {name!r} is not a TrainConfig setting.")
        kind = spec[0] if isinstance(spec, (tuple, list)) and spec else None
        if kind in ("log", "float", "int"):
            if len(spec) != 3 or not spec[1] < spec[2] or (kind == "log" and spec[1] <= 0):
                raise ValueError(f"Search space entry {name!r}: {spec!r} needs low < high (and low > 0 for 'log').")
        elif kind == "choice":
            if len(spec) != 2 or not len(spec[1]):
                raise ValueError(f"Search space entry {name!r}: {spec!r} needs a non-empty tuple of values.")
        else:
            raise ValueError(f"Search space entry {name!r}: kind {kind!r} is not one of 'log', 'float', 'int', 'choice'.")
    return space


def recipe_space(kind: str = "broad", layers: int | None = None) -> dict:
    """The recipe's search space (notebook 07): ``broad`` is :data:`SPACE` with at most ``layers - 1`` frozen layers
    (none for a one-layer model), ``narrow`` is :data:`NARROW_SPACE`."""
    if kind not in SPACES:
        raise ConfigError("space", kind, f"one of {', '.join(SPACES)}",
                          "'narrow' tries the usual fine-tuning rates with full-length trials.")
    if kind == "narrow":
        return dict(NARROW_SPACE)
    space = dict(SPACE)
    top = SPACE["freeze_layers"][2] if layers is None else min(SPACE["freeze_layers"][2], layers - 1)
    if top < 1:
        space.pop("freeze_layers")
    else:
        space["freeze_layers"] = ("int", 0, top)
    return space


def grid_of(space: dict) -> dict | None:
    """``space`` as a grid ({setting: values}) when every entry is a choice, else None: a grid study tries each
    combination once (notebook 07)."""
    if all(spec[0] == "choice" for spec in space.values()):
        return {name: list(spec[1]) for name, spec in space.items()}
    return None


def grid_size(grid: dict | None) -> int | None:
    """How many combinations ``grid`` holds (None for no grid) (notebook 07)."""
    return None if grid is None else math.prod(len(v) for v in grid.values())


def suggest(trial, space: dict = SPACE) -> dict:
    """Ask the trial for one value per entry of ``space`` (the sampler decides which) (notebook 06)."""
    params = {}
    for name, spec in space.items():
        kind = spec[0]
        if kind == "choice":
            params[name] = trial.suggest_categorical(name, list(spec[1]))
        elif kind == "int":
            params[name] = trial.suggest_int(name, spec[1], spec[2])
        else:
            params[name] = trial.suggest_float(name, spec[1], spec[2], log=kind == "log")
    return params


def config_from_params(base: TrainConfig, params: dict, space: dict = SPACE) -> TrainConfig:
    """``base`` with a trial's parameters, each cast by its search-space kind (notebooks 06, 07).

    Floats stay floats whatever type ``base`` holds (``warmup_fraction=0.164``
    stays 0.164 even when the base says ``warmup_fraction=0``), so the final
    run trains with exactly the settings the trial had. Raises if a value did
    not survive the rebuild.
    """
    changes = {}
    for name, value in params.items():
        if name not in space:
            raise ValueError(f"Parameter {name!r} is not in the search space ({', '.join(space)}).")
        kind = space[name][0]
        changes[name] = float(value) if kind in ("log", "float") else int(value) if kind == "int" else value
    cfg = base.replace(**changes)
    for name, value in changes.items():
        got = getattr(cfg, name)
        if got != value or type(got) is not type(value):
            raise AssertionError(f"{name}: the rebuilt config holds {got!r}, the trial had {value!r}.")
    return cfg


def subset_size(n_train: int, fraction: float = SUBSET_FRACTION, minimum: int = MIN_SUBSET) -> int:
    """How many training pairs the search uses: ``fraction`` of ``n_train``, at least ``minimum`` (or all)
    (notebook 06)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"The subset fraction must be in (0, 1], got {fraction}.")
    return min(n_train, max(minimum, round(n_train * fraction)))


def space_table(space: dict = SPACE):
    """The search space as a table: setting, how it is sampled, and its range or choices (notebook 06)."""
    import pandas as pd

    how = {"log": "log-uniform", "float": "uniform", "int": "whole numbers", "choice": "one of"}
    rows = [{"setting": name, "sampled": how[spec[0]],
             "values": ", ".join(map(str, spec[1])) if spec[0] == "choice" else f"{spec[1]:g} to {spec[2]:g}"}
            for name, spec in space.items()]
    return pd.DataFrame(rows).set_index("setting")


def subset_task(task, fraction: float = SUBSET_FRACTION, seed: int = 0, minimum: int = MIN_SUBSET):
    """The same task with a seeded subset of its training data (validation and test unchanged) (notebook 06)."""
    return replace(task, train=subset(task.train, subset_size(len(task.train), fraction, minimum), seed))


def search_base(base: TrainConfig) -> TrainConfig:
    """What every trial shares: ``base`` without test scoring, early stopping or saving, 2 evaluations per epoch
    (notebook 06)."""
    return base.replace(final_test=False, early_stopping_patience=None, output_dir=None,
                        evals_per_epoch=SEARCH_EVALS_PER_EPOCH)


# --------------------------------------------------------------------------- the study


def storage_url(path_or_url: str | Path) -> str:
    """An Optuna storage URL: a URL as given, or ``sqlite:///<absolute path>`` for a file path (notebook 06)."""
    s = str(path_or_url)
    if "://" in s:
        return s
    path = Path(s).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def default_storage(name: str) -> str:
    """``runs/<name>.db`` in the project (ignored by git): where the notebooks keep their studies (notebook 06)."""
    return storage_url(PROJECT_ROOT / "runs" / f"{name}.db")


def make_pruner(name: str = "halving", max_evals: int | None = None):
    """An Optuna pruner by name: ``halving`` (successive halving), ``hyperband``, ``median`` or ``none`` (notebook 06).

    The pruners' "steps" are the trial's validation evaluations (1, 2, ...), so
    trials of any batch size are compared at the same share of an epoch.
    """
    import optuna

    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_evals or "auto", reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"Unknown pruner {name!r}; use one of {', '.join(PRUNERS)}.")


def _storage(url: str):
    """An RDB storage with a heartbeat (SQLite file or database URL): a killed worker's trial never stays RUNNING."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # several SQLite writers: wait for the lock instead of failing
        engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
        for attempt in range(3):
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_INTERVAL,
                                                  grace_period=GRACE_PERIOD)
            except Exception as exc:  # a malformed URL, a missing database driver, a file that is not a database
                racing = "already exists" in str(exc) or "UNIQUE constraint failed" in str(exc)
                if racing and attempt < 2:  # another process created the tables (or stamped their version) just now
                    time.sleep(0.5)  # (torchrun ranks open a new study at once); the next try finds them
                    continue
                raise ValueError(f"Cannot open the study storage {url!r} ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}). Give a file path such as "
                                 "runs/study.db or a database URL such as postgresql://user@host/db.") from None


def settings_record(base: TrainConfig, space: dict, data=None, subset_fraction: float | None = None) -> dict:
    """What a study was made with (stored in it; a resumed study must match): base settings, space, data
    (notebook 06)."""
    keep = {k: v for k, v in asdict(base).items() if k not in ("device", "output_dir")}
    rec = {"base": keep, "space": {k: list(v) if v[0] != "choice" else [v[0], list(v[1])] for k, v in space.items()}}
    if data is not None:
        rec["data"] = {"task": data.name, "train": len(data.train), "dev": len(data.dev), "columns": data.columns,
                       "subset_fraction": subset_fraction}
    return json.loads(json.dumps(rec, default=str))


def create_study(name: str, storage: str | Path | None = None, pruner: str = "halving", seed: int = 0,
                 settings: dict | None = None, max_evals: int | None = None, startup_trials: int | None = None,
                 worker: int = 0, grid: dict | None = None):
    """Create or load (resume) the study ``name`` in ``storage`` (a path, a URL, or None for memory) (notebook 06).

    TPE sampler (seeded; re-seeded by the number of stored trials, so a resumed
    study never replays its first proposals) and the named pruner. ``settings``
    (see :func:`settings_record`) is stored with a new study and compared with
    a stored one: a different search under the same name raises
    :class:`StudyMismatch` before anything trains. Several workers sharing one
    study each take their own ``worker`` number (their random start-up
    proposals would otherwise be the same), and the sampler's ``constant_liar``
    treats the other workers' running trials as poor results so that TPE
    proposes elsewhere. ``grid`` (see :func:`grid_of`): Optuna's ``GridSampler``
    instead, which tries every combination once, in a seeded order (notebook 07).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = None if storage is None else _storage(storage_url(storage))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(study_name=name, storage=store, direction="maximize",
                                    pruner=make_pruner(pruner, max_evals), load_if_exists=True)
    stored = study.user_attrs.get("settings")
    if settings is not None:
        if stored is None and not study.trials:
            study.set_user_attr("settings", settings)
        elif stored is not None and stored != settings:
            diff = sorted(_differences(stored, settings))
            raise StudyMismatch(
                f"The stored study {name!r} in {storage} was made with other settings ({', '.join(diff)} differ). "
                "Use another study name or output folder, or delete the stored study to start again.")
    startup = startup_trials if startup_trials is not None else 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # constant_liar
        study.sampler = (optuna.samplers.GridSampler(grid, seed=seed) if grid is not None else
                         optuna.samplers.TPESampler(seed=seed + 100_003 * worker + len(study.trials),
                                                    n_startup_trials=startup, constant_liar=True))
    return study


def _differences(a, b, prefix="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in set(a) | set(b):
            out += _differences(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def delete_study(name: str, storage: str | Path) -> bool:
    """Delete the stored study ``name`` if it exists (a notebook that wants a fresh start); True if it did
    (notebook 06)."""
    import optuna

    try:
        optuna.delete_study(study_name=name, storage=_storage(storage_url(storage)))
        return True
    except KeyError:
        return False


def finished(study) -> list:
    """Trials that count towards the requested number: completed and pruned (not failed or running) (notebook 06)."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


# --------------------------------------------------------------------------- the objective


class PruningCallback(TrainerCallback):
    """Reports every validation evaluation to the Optuna trial; stops training when the pruner says so (notebook 06).

    The evaluation before training (step 0) is skipped: it is the untuned
    model, the same for every trial. Step numbers are evaluation counts.
    """

    def __init__(self, trial, metric_key: str):
        self.trial, self.key = trial, f"eval_{metric_key}"
        self.reported = 0
        self.pruned_at: int | None = None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.global_step == 0 or not metrics or self.key not in metrics:
            return
        value = float(metrics[self.key])
        if not math.isfinite(value):
            return
        self.reported += 1
        self.trial.report(value, self.reported)
        if self.trial.should_prune():
            self.pruned_at = self.reported
            control.should_training_stop = True


class Objective:
    """Train one trial's configuration on ``data`` and return its validation score (notebooks 06, 07).

    A pruned trial raises ``optuna.TrialPruned``; so does a run that diverged
    (its last evaluation may predate the divergence). Ctrl-C during a trial
    raises ``KeyboardInterrupt`` after the run stopped cleanly, so Optuna marks
    the trial failed and the study keeps every finished trial. ``save_best_to``:
    a folder where the best model so far is saved (atomically) whenever a trial
    beats every earlier one.
    """

    def __init__(self, base: TrainConfig, data, space: dict = SPACE, save_best_to: str | Path | None = None,
                 callbacks=(), on_trial=None):
        self.base, self.data, self.space = search_base(base), data, check_space(space)
        self.save_best_to = save_best_to
        self.callbacks = list(callbacks)
        self.on_trial = on_trial  # called with (trial, result) after each run

    def __call__(self, trial) -> float:
        import optuna

        cfg = config_from_params(self.base, suggest(trial, self.space), self.space)
        pruning = PruningCallback(trial, self.data.dev_metric_key)
        result = train(cfg, data=self.data, progress=False, callbacks=[pruning, *self.callbacks])
        for key, value in (("wall_s", result.wall_time), ("steps", result.steps), ("stop", result.stop_reason),
                           ("examples", result.steps * result.effective_batch),
                           ("train_examples", result.train_examples), ("trainable_params", result.trainable_params),
                           ("pruned_at", pruning.pruned_at)):
            trial.set_user_attr(key, value)
        if self.on_trial is not None:
            self.on_trial(trial, result)
        model, result.model = result.model, None
        if result.stop_reason == "interrupted":
            raise KeyboardInterrupt
        if pruning.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned by the pruner at evaluation {pruning.pruned_at}")
        if result.stop_reason.startswith("diverged"):
            raise optuna.TrialPruned(result.stop_reason)
        value = result.dev_metric
        if not math.isfinite(value):
            raise optuna.TrialPruned("no finite validation score")
        if self.save_best_to is not None and _beats_all(trial.study, value):
            save_model_atomically(model, self.save_best_to)
            trial.set_user_attr("saved_model", str(self.save_best_to))
        return value


def _beats_all(study, value: float) -> bool:
    from optuna.trial import TrialState

    done = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return not done or value > max(done)


# --------------------------------------------------------------------------- reading a study


def subset_score(trial) -> float:
    """A trial's score on the subset: its final value, or for a pruned trial its last reported evaluation
    (notebook 06)."""
    if trial.value is not None:
        return float(trial.value)
    if trial.intermediate_values:
        return float(trial.intermediate_values[max(trial.intermediate_values)])
    return float("nan")


def trials_table(study):
    """One row per finished trial, best first: state, subset score, evaluations reached, parameters, seconds
    (notebooks 06 and 07)."""
    import pandas as pd

    rows = []
    for t in finished(study):
        row = {"trial": t.number, "state": t.state.name.lower(), "subset score": round(subset_score(t), 4),
               "evaluations": len(t.intermediate_values)}
        row.update({k: (float(f"{v:.3g}") if isinstance(v, float) else v) for k, v in t.params.items()})
        row["seconds"] = round(t.user_attrs.get("wall_s", float("nan")), 1)
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.sort_values("subset score", ascending=False).set_index("trial")


def best_config(study, base: TrainConfig, space: dict = SPACE) -> TrainConfig:
    """``base`` with the best completed trial's parameters (the final run of notebook 07 and the CLI)."""
    return config_from_params(base, study.best_trial.params, space)


def default_trials(scale: str | None = None) -> int:
    """The scale's number of search trials (``Scale.search_trials``) (notebook 06)."""
    return get_scale(scale).search_trials


__all__ = [
    "SPACE", "NARROW_SPACE", "SPACES", "recipe_space", "grid_of", "grid_size", "PRUNERS", "SUBSET_FRACTION", "StudyMismatch", "check_space", "suggest", "config_from_params",
    "subset_size", "space_table", "subset_task", "search_base", "storage_url", "default_storage", "make_pruner", "create_study",
    "delete_study", "finished", "settings_record", "PruningCallback", "Objective", "subset_score",
    "trials_table", "best_config", "default_trials", "HEARTBEAT_INTERVAL", "GRACE_PERIOD",
]
