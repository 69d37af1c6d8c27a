"""The whole recipe on the learner's own data (notebook 07 and ``python -m helpers recipe``).

1. validate and profile the data (every file loaded and checked before anything trains);
2. score the untuned model;
3. search (:mod:`helpers.tuning`, a stored Optuna study that resumes): the usual rates on all the data, or a
   broad space on a subset;
4. train on everything with the best trial's schedule, freezing and rates, with early stopping;
5. test against the untuned model, save the model folder, reload it and encode a few sentences;
6. train the common default on the same data and say plainly whether the tuned configuration beat it and the
   untuned model on the validation set, with what to try when it did not (:func:`assess`).

:class:`Recipe` runs these steps one by one (the notebook shows each) or all
at once (:meth:`Recipe.run`, the command line). The output folder holds the
model (``model/``), the study (``study.db``), the best trial's model while the
search runs (``best_trial_model/``), ``summary.json`` and the finished final and
default runs' numbers (``final_result.json``, ``default_result.json``). Ctrl-C
stops cleanly: the study and the best model so far stay, and the same call
resumes the study and reuses every run that had finished (never trains it again).
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from . import data as D
from . import distributed as Dist
from . import tuning as S
from .config import get_scale, pick_device
from .evaluation import ir_evaluator, score, sts_evaluator
from .losses import default_loss
from .models import load_model, n_layers
from .plots.recipe import plot_profile, plot_scores
from .profiling import profile, profile_warnings
from .recipe_report import COMMON_DEFAULT, assess, reload_tolerance, report
from .refstore import config_ident
from .results import TrainResult, strict_json, write_json_atomically
from .settings import ConfigError, TrainConfig, validate
from .tasks import Task, load_task
from .training import train
from .workers import SyncStop, lockstep_search, run_search

SUMMARY_FORMAT = "workshop-recipe-summary"
MARKERS = ("summary.json", "study.db")  # files that make a folder a recipe output folder
DEFAULT_SENTENCES = ("A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell sharply today.")


# --------------------------------------------------------------------------- data


def _ir(part) -> dict:
    """A retrieval evaluation from (anchor, positive[, negative]) rows: each anchor's positive is relevant."""
    corpus_ids: dict[str, str] = {}
    for c in ["positive"] + (["negative"] if "negative" in part.column_names else []):
        for t in part[c]:
            corpus_ids.setdefault(t, f"c{len(corpus_ids)}")
    queries = {f"q{i}": a for i, a in enumerate(part["anchor"])}
    relevant = {f"q{i}": {corpus_ids[p]} for i, p in enumerate(part["positive"])}
    return {"queries": queries, "corpus": {v: k for k, v in corpus_ids.items()}, "relevant": relevant}


def _check_scores_vary(ds, path, split: str) -> None:
    if "score" in ds.column_names and len(set(ds["score"])) < 2:
        raise D.DataError(path, None, f"every score in the {split} split is the same ({ds['score'][0]:g}); "
                                      "a Spearman correlation needs scores that vary")


def load_data(train: str | os.PathLike = "stsb", dev=None, test=None, score_range=(0.0, 1.0), seed: int = 0,
              scale: str | None = None, train_size: int | None = None) -> Task:
    """The recipe's data: STS-B at the scale's sizes (``"stsb"``), or the learner's files (notebook 07).

    ``train`` is a CSV/TSV/JSONL file; ``dev`` and ``test`` are optional files
    with the same columns. A missing one is split off the training file
    (seeded, 10% each). Every file is read and checked first; any problem
    raises :class:`helpers.DataError` naming the file and line.
    """
    if str(train) == "stsb":
        if dev is not None or test is not None:
            raise ValueError("Separate dev and test files need a training file (train=PATH), not the built-in 'stsb'.")
        s = get_scale(scale)
        return load_task("stsb", train_size or s.train_size, s.dev_size, s.test_size, seed=seed)
    paths = {"train": Path(train), "dev": dev and Path(dev), "test": test and Path(test)}
    parts = {k: D.load_pairs_file(p, score_range=score_range) for k, p in paths.items() if p}
    cols = set(parts["train"].column_names)
    for split in ("dev", "test"):
        if split in parts and set(parts[split].column_names) != cols:
            raise D.DataError(paths[split], 1, f"columns {sorted(parts[split].column_names)} differ from the training "
                                               f"file's {sorted(cols)}; use the same columns in every file")
    ds = parts["train"].shuffle(seed=seed)
    missing = [s for s in ("dev", "test") if s not in parts]
    if missing:
        n_eval = max(1, len(ds) // 10)
        if len(ds) - n_eval * len(missing) < 8:
            raise D.DataError(paths["train"], None,
                              f"only {len(ds)} rows: too few to split off {' and '.join(missing)} and keep 8 for "
                              "training; give at least 10 rows per split needed, or pass --dev and --test files")
        for i, split in enumerate(missing):
            parts[split] = ds.select(range(i * n_eval, (i + 1) * n_eval))
        ds = ds.select(range(len(missing) * n_eval, len(ds)))
    if len(ds) < 8:
        raise D.DataError(paths["train"], None, f"only {len(ds)} training rows; the recipe needs at least 8")
    if train_size is not None:
        ds = D.subset(ds, train_size, seed, strict=True)
    for split in ("dev", "test"):
        _check_scores_vary(parts[split], paths[split] or paths["train"], split)
    name = str(paths["train"].expanduser().resolve())
    if "score" in cols:
        return Task(name, ds, parts["dev"], sts_evaluator(parts["dev"], "file-dev"),
                    sts_evaluator(parts["test"], "file-test"), "Spearman")
    return Task(name, ds, parts["dev"], ir_evaluator(_ir(parts["dev"]), "file-dev"),
                ir_evaluator(_ir(parts["test"]), "file-test"), "nDCG@10")


# --------------------------------------------------------------------------- output folder and summary


def check_output_dir(path: str | os.PathLike) -> Path:
    """An output folder that is new, empty, or an earlier recipe's (never a folder holding other files)
    (notebook 07)."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"Output {str(out)!r} is a file; give a folder (it is created if missing).")
    if out.is_dir() and any(out.iterdir()) and not any((out / m).exists() for m in MARKERS):
        raise ValueError(f"Output folder {str(out)!r} holds other files and no earlier recipe output "
                         f"({' or '.join(MARKERS)}); give a new or empty folder so nothing of yours is overwritten.")
    parent = out.parent if not out.exists() else out
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise ValueError(f"Cannot write to {str(parent)!r}; choose an output folder you can write to.")
    return out


def write_json(path: Path, payload: dict) -> Path:
    """Write ``payload`` as strict JSON (NaN as null) atomically (:func:`helpers.results.write_json_atomically`)
    (notebook 07)."""
    return write_json_atomically(path, strict_json(payload))


# --------------------------------------------------------------------------- the recipe


class Recipe:
    """The whole recipe, step by step (notebook 07) or in one call (:meth:`run`, the command line).

    Nothing trains before :meth:`prepare` has loaded and checked every input:
    data files, settings, output folder, device, model and the stored study.
    """

    def __init__(self, train="stsb", dev=None, test=None, output="runs/recipe", scale: str | None = None,
                 trials: int | None = None, subset: float | None = None, pruner: str | None = None,
                 study_name: str = "recipe", storage: str | None = None, score_range=(0.0, 1.0),
                 loss: str | None = None, model: str | None = None, epochs: float | None = None, patience: int = 3,
                 max_seq_length: int | None = None, seed: int = 0, device: str | None = None,
                 train_size: int | None = None, fresh: bool = False, progress: bool = True, worker: int = 0,
                 compare_default: bool = True, search_epochs: float | None = None, space: str = "narrow"):
        self.args = dict(train=str(train), dev=dev and str(dev), test=test and str(test), score_range=tuple(score_range),
                         train_size=train_size)
        self.scale = get_scale(scale)
        self.output = Path(output).expanduser()
        # ``space``: "narrow" (every usual rate, each trial on all the data) or "broad" (S.SPACE, TPE on a subset);
        # trials, subset and pruner left at None follow it (:meth:`_space_defaults`)
        self.space_kind, self.trials, self.subset_fraction, self.pruner = space, trials, subset, pruner
        self.study_name = study_name
        self.storage = storage
        self.loss, self.model_name, self.epochs, self.patience = loss, model, epochs, patience
        self.search_epochs = search_epochs  # epochs of each trial (default: ``epochs``); fewer costs less
        self.max_seq_length = max_seq_length or self.scale.max_seq_length
        self.seed, self.device, self.fresh, self.progress = seed, device, fresh, progress
        self.worker, self.compare_default = worker, compare_default
        self.summary: dict = {"format": SUMMARY_FORMAT, "version": 1, "status": "not started", "stage": None,
                              "timings": {}}
        self.task = self.search_task = self.study = self.base = self.final_result = self.default_result = None

    # ----------------------------------------------------------------- helpers
    def _time(self, name: str, start: float) -> None:
        self.summary["timings"][f"{name}_s"] = round(time.perf_counter() - start, 2)

    def _train_or_reuse(self, name: str, cfg: TrainConfig):
        """Train ``cfg`` on all the training data as the ``name`` run ("final" or "default"), or reuse the run this
        folder already finished with the same settings; the step is timed and its result kept for a rerun.
        Returns ``(result, reused)``."""
        start = time.perf_counter()
        self.summary["stage"] = name
        r = self._stored_run(name, cfg)
        reused = r is not None
        try:
            if not reused:
                r = train(cfg, data=self.task, progress=self.progress)
                self._store_run(name, r)
        finally:
            self._time(name, start)
        return r, reused

    def _store_run(self, name: str, r) -> None:
        """Keep a finished run's numbers (``<name>_result.json``) so that a rerun after an interrupt reuses it."""
        if r.stop_reason != "interrupted" and Dist.is_main_process():
            self.output.mkdir(parents=True, exist_ok=True)
            r.save_json(self.output / f"{name}_result.json")

    def _stored_run(self, name: str, cfg: TrainConfig):
        """The ``name`` run ("final" or "default") this folder already finished with exactly ``cfg``'s settings
        (and, for the final run, its saved model), or None: rerunning the command never trains it again."""
        path = self.output / f"{name}_result.json"
        if not path.exists():
            return None
        try:
            r = TrainResult.load_json(path)
        except ValueError:
            return None
        if config_ident(r.config) != config_ident(asdict(cfg.resolved())):
            return None
        if name == "final" and not (self.output / "model" / "modules.json").exists():
            return None
        return r

    def save_summary(self) -> Path:
        """Write ``summary.json`` in the output folder (atomically; under torchrun only rank 0 writes)."""
        if not Dist.is_main_process():
            return self.output / "summary.json"
        self.output.mkdir(parents=True, exist_ok=True)
        return write_json(self.output / "summary.json", self.summary)

    # ----------------------------------------------------------------- steps
    def prepare(self) -> "Recipe":
        """Load and check everything (data, settings, output folder, device, model, study); raises on bad input."""
        start = time.perf_counter()
        self._space_defaults()
        if not isinstance(self.trials, int) or isinstance(self.trials, bool) or self.trials < 1:
            raise ConfigError("trials", self.trials, "a whole number of at least 1", "12-16 trials are usual on a laptop.")
        if not isinstance(self.subset_fraction, (int, float)) or not 0 < self.subset_fraction <= 1:
            raise ConfigError("subset", self.subset_fraction, "a fraction in (0, 1]", "About 0.1 (10%) is usual.")
        if self.pruner not in S.PRUNERS:
            raise ConfigError("pruner", self.pruner, f"one of {', '.join(S.PRUNERS)}", "'halving' is the default.")
        if self.search_epochs is not None and not (isinstance(self.search_epochs, (int, float))
                                                   and self.search_epochs > 0):
            raise ConfigError("search_epochs", self.search_epochs, "a positive number", "1 with --subset 1.")
        if not isinstance(self.patience, int) or self.patience < 1:
            raise ConfigError("patience", self.patience, "a whole number of at least 1", "The syllabus uses 3.")
        lo, hi = self.args["score_range"]
        if not lo < hi:
            raise ValueError(f"score range must be LOW HIGH with LOW < HIGH, got {lo:g} {hi:g}.")
        check_output_dir(self.output)
        self.device = Dist.local_device(pick_device(self.device))  # cuda:LOCAL_RANK under torchrun
        Dist.check_launch(self.device)
        self.task = load_data(self.args["train"], self.args["dev"], self.args["test"], self.args["score_range"],
                              self.seed, self.scale.name, self.args["train_size"])
        self.model = load_model(self.model_name, device=self.device, max_seq_length=self.max_seq_length)
        layers = n_layers(self.model)
        self.space = S.recipe_space(self.space_kind, layers)
        self.base = TrainConfig(task=self.task.name, model=self.model_name, loss=self.loss, epochs=self.epochs,
                                max_seq_length=self.max_seq_length, seed=self.seed, device=self.device,
                                scale=self.scale.name, score_range=self.args["score_range"])
        grid = S.grid_of(self.space)
        if grid is not None:  # a grid varies only its own settings: the rest is the common default
            self.base = self.base.replace(**{k: v for k, v in COMMON_DEFAULT.items() if k not in self.space})
        # the search's extreme settings and the final run's must be valid before anything trains
        for cfg in (S.search_base(self.trial_base()), self.final_base()):
            validate(cfg.resolved(), layers=layers, columns=self.task.columns)
        self.search_task = S.subset_task(self.task, self.subset_fraction, self.seed)
        if Dist.is_distributed():  # every trial's batch must give each process a full batch (data-parallel)
            space = self.space.get("batch_size")
            biggest = max(space[1]) if space else self.base.resolved().batch_size
            Dist.check_rows({"search subset": len(self.search_task.train), "training data": len(self.task.train)},
                            biggest)
        self.storage = self.storage or str(self.output / "study.db")
        if self.fresh:
            S.delete_study(self.study_name, self.storage)
            for name in RUN_NAMES:
                (self.output / f"{name}_result.json").unlink(missing_ok=True)
        settings = S.settings_record(S.search_base(self.trial_base()).resolved(), self.space, self.search_task,
                                      self.subset_fraction)
        self.study = S.create_study(self.study_name, self.storage, pruner=self.pruner, seed=self.seed,
                                    settings=settings, max_evals=self._max_evals(), worker=self.worker,
                                    grid=grid)
        self.profile = profile(self.task, self.model.tokenizer, self.max_seq_length)
        self.warnings = profile_warnings(self.profile, self.max_seq_length)
        self.summary.update({
            "status": "prepared", "scale": self.scale.name, "device": self.device,
            "data": {"train": self.args["train"], "dev": self.args["dev"], "test": self.args["test"],
                     "task": self.task.name, "metric": self.task.metric, "columns": self.task.columns,
                     "rows": {"train": len(self.task.train), "dev": len(self.task.dev),
                              "search subset": len(self.search_task.train)},
                     "warnings": self.warnings},
            "search": {"study": self.study_name, "storage": S.storage_url(self.storage), "trials": self.trials,
                       "pruner": self.pruner, "subset_fraction": self.subset_fraction, "space": self.space_kind,
                       "epochs": self.trial_base().epochs or self.scale.epochs},
            "model": None})
        self._time("prepare", start)
        return self

    def _space_defaults(self) -> None:
        """Fill in what the space decides: a grid tries each value once, on all the data, unpruned (at most its
        size in trials); the broad space samples the scale's trials on a 10% subset with successive halving."""
        size = S.grid_size(S.grid_of(S.recipe_space(self.space_kind)))
        if self.trials is None or (size and isinstance(self.trials, int) and self.trials > size):
            self.trials = size or self.scale.search_trials
        if self.subset_fraction is None:
            self.subset_fraction = 1.0 if size else S.SUBSET_FRACTION
        if self.pruner is None:
            self.pruner = "none" if size else "halving"

    def trial_base(self) -> TrainConfig:
        """What every search trial starts from: the final run's data and settings, over ``search_epochs``."""
        return self.base if self.search_epochs is None else self.base.replace(epochs=self.search_epochs)

    def _max_evals(self) -> int:
        epochs = self.trial_base().epochs or self.scale.epochs
        return max(1, math.ceil(epochs * S.SEARCH_EVALS_PER_EPOCH))

    def final_base(self) -> TrainConfig:
        """The final run's settings before the search fills in its parameters (early stopping, output folder)."""
        return self.base.replace(early_stopping_patience=self.patience, evals_per_epoch=self.scale.evals_per_epoch,
                                 output_dir=str(self.output / "model"), final_test=True)

    def untuned(self) -> dict:
        """The untuned model's validation and test scores (the baseline every step is measured against)."""
        start = time.perf_counter()
        scores = {"dev": score(self.model, self.task.dev_evaluator), "test": score(self.model, self.task.test_evaluator)}
        self.summary["untuned"] = scores
        self._time("untuned", start)
        return scores

    def search(self):
        """Run the study on the subset until it holds ``trials`` finished trials (resumes a stored one)."""
        start = time.perf_counter()
        self.summary["stage"] = "search"
        objective = S.Objective(self.trial_base(), self.search_task, self.space, save_best_to=self.output / "best_trial_model",
                                callbacks=[SyncStop()] if Dist.is_distributed() else (),
                                on_trial=lambda trial, result: trial.set_user_attr("worker", self.worker))
        report = None
        try:
            if Dist.is_distributed():  # torchrun: every trial trains on all processes together
                report = lockstep_search(self.study, objective, self.trials, self.trial_base(), self.search_task,
                                         self.space, progress=self.progress)
            else:
                report = run_search(self.study, objective, self.trials, progress=self.progress)
        except KeyboardInterrupt as exc:
            report = getattr(exc, "report", None)  # what the search did before Ctrl-C
            raise
        finally:
            self._record_search(report)
            self._time("search", start)
        return report

    def _record_search(self, report) -> None:
        info = self.summary["search"]
        if report is not None:
            info.update({"finished": report.finished, "complete": report.complete, "pruned": report.pruned,
                         "new_trials": report.new_trials, "running": report.running})
        with contextlib.suppress(ValueError):
            best = self.study.best_trial
            info.update({"best_trial": best.number, "best_subset_score": best.value, "best_params": best.params})
            if (self.output / "best_trial_model").exists():
                self.summary["model"] = str(self.output / "best_trial_model")

    def final(self):
        """Train the best configuration on all the training data, with early stopping; saves ``model/``."""
        cfg = S.best_config(self.study, self.final_base(), self.space)
        r, reused = self._train_or_reuse("final", cfg)
        self.final_result = r
        self.summary["final"] = {"config": {k: cfg.__dict__[k] for k in self.space} | {
            "epochs": r.config["epochs"], "early_stopping_patience": self.patience,
            "loss": r.config["loss"] or default_loss(self.task.columns)},
            "dev": r.dev_metric, "test": r.test_metric, "steps": r.steps, "stop_reason": r.stop_reason,
            "best_step": r.best_step, "train_examples": r.train_examples, "wall_s": r.wall_time,
            "precision": r.precision, "reused": reused}
        if (self.output / "model").exists():
            self.summary["model"] = str(self.output / "model")
            shutil.rmtree(self.output / "best_trial_model", ignore_errors=True)
        return r

    def check_reload(self, sentences=DEFAULT_SENTENCES) -> dict:
        """Reload the saved folder, score it on test again and encode ``sentences``."""
        start = time.perf_counter()
        model = load_model(self.output / "model", device=self.device, max_seq_length=self.max_seq_length)
        emb = model.encode(list(sentences), convert_to_tensor=True, normalize_embeddings=True)
        sims = (emb @ emb.T).cpu().tolist()
        test = score(model, self.task.test_evaluator)
        before, tolerance = self.final_result.test_metric, reload_tolerance(self.final_result.precision)
        check = {"test_after_reload": test, "test_before_saving": before, "tolerance": tolerance,
                 "same_test_score": abs(test - before) <= tolerance,
                 "embedding_dim": int(emb.shape[1]), "sentences": list(sentences),
                 "cosine": [[round(v, 4) for v in row] for row in sims]}
        self.summary["reload"] = check
        self._time("reload", start)
        return check

    def default_config(self) -> TrainConfig:
        """The common default on the same data: :data:`COMMON_DEFAULT` on the recipe's base, the final run's
        epochs and evaluations, no early stopping (it keeps its last weights, as a plain run would)."""
        return self.base.replace(**COMMON_DEFAULT, evals_per_epoch=self.scale.evals_per_epoch, final_test=True)

    def default(self):
        """Train the common default on all the training data: the bar the tuned configuration has to clear."""
        r, reused = self._train_or_reuse("default", self.default_config())
        self.default_result = r
        self.summary["default"] = {"config": dict(COMMON_DEFAULT), "dev": r.dev_metric, "test": r.test_metric,
                                   "steps": r.steps, "wall_s": r.wall_time, "reused": reused}
        return r

    def assess(self) -> dict:
        """What the final run achieved, said plainly, with what to try when it did not pay off
        (``summary["assessment"]``; printed by :func:`report`)."""
        out = assess(self.summary)
        self.summary["assessment"] = out
        return out

    def finish(self) -> Path:
        """Mark the recipe done (after the steps ran one by one, as in notebook 07) and write the summary."""
        if self.summary.get("final"):
            self.assess()
        self.summary.update(status="finished", stage="done")
        self.summary["timings"]["total_s"] = round(sum(v for k, v in self.summary["timings"].items()
                                                       if k != "total_s"), 2)
        return self.save_summary()

    def run(self, final: bool = True) -> dict:
        """Every step after :meth:`prepare` (call that first); returns the summary, also on Ctrl-C."""
        start = time.perf_counter()
        try:
            self.untuned()
            self.search()
            if final:
                r = self.final()
                if r.stop_reason == "interrupted":
                    raise KeyboardInterrupt
                self.check_reload()
                if self.compare_default:
                    self.default()
                self.assess()
            self.summary.update(status="finished", stage="done")
        except KeyboardInterrupt:
            self.summary["status"] = "interrupted"
            self._record_search(None)
        except Exception as exc:
            self.summary.update(status="failed", error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self.summary["timings"]["total_s"] = round(time.perf_counter() - start + self.summary["timings"].get(
                "prepare_s", 0.0), 2)
            self.save_summary()
        return self.summary


RUN_NAMES = ("final", "default")  # the runs a recipe keeps as <name>_result.json and reuses when rerun


__all__ = ["load_data", "profile", "profile_warnings", "plot_profile", "plot_scores", "check_output_dir", "Recipe",
           "report", "write_json", "assess", "reload_tolerance", "COMMON_DEFAULT"]  # plot_profile, plot_scores: from helpers.plots.recipe, read as hp.recipe.* by notebook 07
