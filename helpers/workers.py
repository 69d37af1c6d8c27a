"""Running a search's trials (notebooks 06, 07, README "Scaling out"): one process, local workers, torchrun.

Experiments layer, on top of :mod:`helpers.tuning` and :mod:`helpers.distributed`.

**One process** (:func:`run_search`) runs trials until the study holds the requested
number of finished ones; a resumed study runs only the missing trials. Optuna's
own pieces do the bookkeeping: ``MaxTrialsCallback`` stops a worker when the
finished and running trials fill the budget, and the storage's heartbeat
fails a killed worker's trial. Two pieces stay home-made, each with a test:
:class:`TrialBudget` stops a trial that two workers started as the last one at
once (``tests/test_distributed.py``), and :func:`fail_dead_trials` fails at once
the running trial of a killed process on this machine, so a search run again
at once is not one trial short (``tests/test_search.py``).

**Parallel search workers.** Several processes, on one machine or many, join one Optuna study
through its storage (a SQLite file on one machine, a database URL such as PostgreSQL for a
cluster). ``python -m helpers search --workers N`` starts N local workers of the same command and
waits for them (:func:`run_workers`); :func:`run_search` keeps them together at
exactly the requested number of finished trials.

**The recipe's search under torchrun** runs every trial on all processes together
(:func:`lockstep_search`): rank 0 asks the study for a trial and broadcasts its parameters,
and its pruner's decision at every evaluation (:class:`SyncStop`).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerCallback

from . import tuning as S
from .devices import gpu_count
from .distributed import broadcast, init_process_group, is_distributed, is_main_process
from .settings import ConfigError
from .training import train


# --------------------------------------------------------------------------- one process


@dataclass
class SearchReport:
    """What :func:`run_search` did: trials run now, finished in the study, the time it took, and any shortfall
    (notebook 06)."""

    new_trials: int
    finished: int
    complete: int
    pruned: int
    wall_s: float
    interrupted: bool = False
    requested: int = 0  # the n_trials asked for
    running: int = 0  # trials still marked running (by other workers, or by a killed one on another machine)

    @property
    def short_by(self) -> int:
        """Finished trials missing from the requested number (0 when the study holds them all)."""
        return max(0, self.requested - self.finished)


class SurplusTrial(Exception):
    """A trial started after the study already had enough trials finished or running (it is marked failed)
    (notebook 06)."""


class TrialBudget:
    """The one home-made piece of the workers' budget: a trial two workers started as the last one at once
    (notebook 06).

    ``MaxTrialsCallback`` only looks after a trial ended, so two workers can
    both start the last trial; :meth:`guard` counts the trials in the order of
    their numbers and stops one beyond the budget at once, marked failed, before
    it trains (``tests/test_distributed.py``). It also records which process
    runs each trial, for :func:`fail_dead_trials`.
    """

    def __init__(self, n_trials: int):
        self.n_trials = n_trials

    def full(self, study) -> bool:
        """True when the trials finished and running (any worker's) already fill the budget."""
        from optuna.trial import TrialState

        taken = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
        return len(taken) >= self.n_trials

    def guard(self, objective):
        """``objective`` that first records its process and refuses a trial beyond the budget."""
        from optuna.trial import TrialState

        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)

        def guarded(trial):
            trial.set_user_attr("host", socket.gethostname())
            trial.set_user_attr("pid", os.getpid())
            earlier = [t for t in trial.study.get_trials(deepcopy=False, states=states) if t.number < trial.number]
            if len(earlier) >= self.n_trials:
                with contextlib.suppress(RuntimeError):  # stop() only works inside study.optimize
                    trial.study.stop()
                raise SurplusTrial(f"trial {trial.number}: the study already holds {len(earlier)} trials "
                                   f"finished or running (asked for {self.n_trials})")
            return objective(trial)

        return guarded


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def fail_dead_trials(study) -> int:
    """Mark failed the running trials whose process on this machine is gone (killed); returns how many (notebook 06).

    The heartbeat fails such a trial only after :data:`GRACE_PERIOD`; a search
    run again sooner would count it as running and end one trial short
    (``tests/test_search.py`` kills a search with SIGKILL and resumes it). A
    trial of this very process that is still marked running is stale too (no
    trial runs while a search starts). Trials of other machines are left to
    the heartbeat.
    """
    import optuna
    from optuna.trial import TrialState

    host, failed = socket.gethostname(), 0
    with contextlib.suppress(Exception), warnings.catch_warnings():  # e.g. a busy database: the heartbeat remains
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != host or not isinstance(pid, int) or (pid != os.getpid() and _alive(pid)):
            continue
        if study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
            failed += 1
    return failed


def run_search(study, objective, n_trials: int, progress: bool = True, timeout: float | None = None) -> SearchReport:
    """Run trials until the study holds ``n_trials`` finished ones (completed or pruned); return a
    :class:`SearchReport` (notebook 06).

    A resumed study runs only the missing trials (a trial left running by a
    killed process on this machine is failed first, :func:`fail_dead_trials`);
    several workers on the same storage together stop at ``n_trials``. A
    progress bar counts finished trials and shows the best score. Ctrl-C stops
    after the current trial stopped cleanly, keeps the stored study and
    re-raises ``KeyboardInterrupt`` with the report as its ``report`` attribute.
    """
    import optuna

    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        raise ConfigError("n_trials", n_trials, "a whole number of at least 1", "12-16 trials are usual on a laptop.")
    fail_dead_trials(study)
    start_done = len(S.finished(study))
    bar = _search_bar(study, n_trials, start_done, progress)
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # no per-trial log lines (the bar shows them)
    start = time.perf_counter()
    try:
        _optimize_until(study, objective, n_trials, timeout, bar.update_from)
    except KeyboardInterrupt as exc:
        exc.report = _report(study, start_done, time.perf_counter() - start, True, n_trials)
        raise
    finally:
        bar.close()
        optuna.logging.set_verbosity(level)
    return _report(study, start_done, time.perf_counter() - start, False, n_trials)


def _optimize_until(study, objective, n_trials: int, timeout: float | None, update) -> None:
    """``study.optimize`` until ``n_trials`` are finished, the budget is taken by running trials, or time is up."""
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    budget = TrialBudget(n_trials)  # several workers on one study stop together at exactly n_trials
    stop = MaxTrialsCallback(n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
    before = -1
    while True:
        done = len(S.finished(study))
        if done >= n_trials or done == before or budget.full(study):  # done, no progress, or others run the rest
            return
        before = done
        study.optimize(budget.guard(objective), n_trials=n_trials - done, timeout=timeout, catch=(SurplusTrial,),
                       callbacks=[stop, update])
        if timeout is not None:
            return
        fail_dead_trials(study)


def _search_bar(study, n_trials: int, start_done: int, progress: bool):
    """A tqdm bar over finished trials; ``bar.update_from(study, trial)`` is the study callback that moves it."""
    from tqdm.auto import tqdm

    bar = tqdm(total=n_trials, initial=min(start_done, n_trials), desc="search", unit="trial", disable=not progress)

    def update_from(st, trial):
        bar.n = min(len(S.finished(st)), n_trials)
        with contextlib.suppress(ValueError):
            bar.set_postfix(best=f"{st.best_value:.4f}", last=trial.state.name.lower(), refresh=False)
        bar.refresh()

    bar.update_from = update_from
    return bar


def _report(study, start_done: int, wall: float, interrupted: bool, requested: int) -> SearchReport:
    from optuna.trial import TrialState

    done = S.finished(study)
    running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    return SearchReport(new_trials=len(done) - start_done, finished=len(done),
                        complete=sum(t.state == TrialState.COMPLETE for t in done),
                        pruned=sum(t.state == TrialState.PRUNED for t in done), wall_s=wall, interrupted=interrupted,
                        requested=requested, running=running)


# --------------------------------------------------------------------------- the recipe's search under torchrun


class SyncStop(TrainerCallback):
    """Every process stops a trial together: rank 0's decision (its pruner's) is broadcast at each evaluation
    (``python -m helpers recipe`` under torchrun; notebook 07).

    Put it after :class:`helpers.tuning.PruningCallback` in the callbacks of rank 0;
    the other ranks have no trial and follow.
    """

    def on_evaluate(self, args, state, control, **kwargs):
        control.should_training_stop = bool(broadcast(bool(control.should_training_stop)))


def lockstep_search(study, objective, n_trials: int, base, data, space, progress: bool = True):
    """The recipe's search under torchrun: every trial trains on all processes together (data-parallel)
    (``python -m helpers recipe`` under torchrun; notebook 07).

    Rank 0 runs the study (``objective`` must carry a :class:`SyncStop` callback) and
    broadcasts each trial's parameters before training it; the other ranks train the
    same configuration and stop when rank 0's pruner stops. Returns rank 0's
    :class:`helpers.tuning.SearchReport` on every rank. Used by :meth:`helpers.recipe.Recipe.search`.
    """
    init_process_group(base.device or "cpu")
    if is_main_process():
        def leader(trial):
            params = S.suggest(trial, space)  # the objective's own suggest() returns these same values
            broadcast(("trial", params))
            return objective(trial)

        report = None
        try:
            report = run_search(study, leader, n_trials, progress=progress)
        finally:
            broadcast(("done", report))
        return report
    trial_base = S.search_base(base)
    while True:
        kind, payload = broadcast(None)
        if kind == "done":
            return payload
        r = train(S.config_from_params(trial_base, payload, space), data=data, progress=False, callbacks=[SyncStop()])
        r.model = None
        if r.stop_reason == "interrupted":
            raise KeyboardInterrupt


# --------------------------------------------------------------------------- several workers on one study


def is_memory_storage(storage: str | None) -> bool:
    """True for storages that live in one process's memory (no storage, ``sqlite://``, ``:memory:``) (notebook 06)."""
    if storage is None:
        return True
    s = str(storage).strip()
    return s.rstrip("/").lower() in ("sqlite:", "memory", ":memory:") or ":memory:" in s or "mode=memory" in s


def check_workers(workers: int | None, storage: str | None) -> None:
    """Raise ``ValueError`` for a ``--workers`` request that cannot work (before anything trains)
    (``python -m helpers search --workers``; notebook 06)."""
    if workers is None:
        return
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers {workers!r}: give a whole number of at least 1 (the local worker processes).")
    if is_distributed():
        raise ValueError("--workers starts its own processes; do not combine it with torchrun / accelerate launch "
                         "(those are for data-parallel training of each run).")
    if storage is not None and is_memory_storage(storage):
        raise ValueError(f"--workers {workers} needs a storage that every worker process can open, not the in-memory "
                         f"{storage!r}: give a SQLite file (the default, DIR/study.db) or a database URL.")


def worker_argv(parser, args, *, worker: int, storage: str, output: Path, scale: str, trials: int) -> list[str]:
    """The ``search`` command line of one local worker: ``args`` as parsed, with its own number, storage and folder
    (``python -m helpers search --workers``; notebook 06)."""
    overrides = {"worker": worker, "storage": storage, "output": str(output), "scale": scale, "trials": trials,
                 "workers": None, "no_progress": True}
    values = {**vars(args), **overrides}
    argv = []
    for action in parser._actions:
        if not action.option_strings or action.dest not in values or action.dest == "help":
            continue
        value = values[action.dest]
        if value is None or (value == action.default and action.dest not in overrides):
            continue
        opt = action.option_strings[-1]
        if action.nargs == 0:
            if value:
                argv.append(opt)
        elif isinstance(value, (list, tuple)):
            argv += [opt, *map(str, value)]
        else:
            argv += [opt, str(value)]
    return argv


def worker_env(base: dict, k: int, n_workers: int, n_gpus: int, cpu_count: int | None = None) -> dict:
    """The environment of local search worker ``k`` of ``n_workers`` (:func:`run_workers`)
    (``python -m helpers search --workers``; notebook 06).

    The workers share the cores (``OMP_NUM_THREADS``, unless set) and, with ``n_gpus`` GPUs
    visible, worker ``k`` sees only GPU ``k % n_gpus`` (``CUDA_VISIBLE_DEVICES``; a list the
    parent already had is respected: worker ``k`` gets its ``k % n``-th entry).
    """
    env = dict(base)
    if "OMP_NUM_THREADS" not in env:  # N workers share the cores instead of each taking all of them
        env["OMP_NUM_THREADS"] = str(max(1, (cpu_count or os.cpu_count() or 1) // n_workers))
    if n_gpus > 0:
        listed = [v.strip() for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        ids = listed[:n_gpus] if len(listed) >= n_gpus else [str(i) for i in range(n_gpus)]
        env["CUDA_VISIBLE_DEVICES"] = ids[k % n_gpus]
    return env


def run_workers(parser, args, recipe, progress: bool = True) -> dict:
    """Start ``args.workers`` local ``search`` workers on the recipe's study, wait for all, report (``--workers N``)
    (``python -m helpers search --workers``; notebook 06).

    Worker ``k`` runs ``python -m helpers search`` with the same options,
    ``--worker args.worker * N + k`` (its sampler seed), the recipe's storage and
    study name, ``--output DIR/workers/k`` (its own summary and best model) and its
    log in ``DIR/workers/worker-k.log``; on a machine with GPUs it sees only GPU ``k % GPUs``
    (:func:`worker_env`). Ctrl-C is forwarded to every worker (each
    stops after its trial cleanly). Returns ``{"count", "exit_codes", "logs",
    "trials_by_worker", "interrupted", "wall_s"}``; the best trial's model is moved
    to ``DIR/best_trial_model``. Used by :mod:`helpers.cli`.
    """
    n = args.workers
    folder = recipe.output / "workers"
    folder.mkdir(parents=True, exist_ok=True)
    storage = S.storage_url(recipe.storage)
    gpus = gpu_count()
    procs, logs = [], []
    start = time.perf_counter()
    try:
        for k in range(n):
            number = args.worker * n + k
            argv = worker_argv(parser, args, worker=number, storage=storage, output=folder / str(k),
                               scale=recipe.scale.name, trials=recipe.trials)
            log = folder / f"worker-{k}.log"
            logs.append(log)
            with open(log, "w", encoding="utf-8") as fh:
                procs.append(subprocess.Popen([sys.executable, "-m", "helpers", "search", *argv], stdout=fh,
                                              stderr=subprocess.STDOUT, env=worker_env(os.environ, k, n, gpus),
                                              cwd=os.getcwd(),
                                              start_new_session=True))  # Ctrl-C reaches them only through us
        codes, interrupted = _wait(procs, recipe, progress), False
    except KeyboardInterrupt:
        interrupted = True
        codes = _stop(procs)
    finally:
        for p in procs:  # never leave a worker behind (an error in the parent itself)
            if p.poll() is None:
                p.kill()
                p.wait()
    info = {"count": n, "exit_codes": codes, "logs": [str(p) for p in logs], "interrupted": interrupted,
            "wall_s": round(time.perf_counter() - start, 2), "trials_by_worker": {}}
    for t in S.finished(recipe.study):
        w = t.user_attrs.get("worker")
        info["trials_by_worker"][str(w)] = info["trials_by_worker"].get(str(w), 0) + 1
    _collect_best_model(recipe)
    return info


def _wait(procs, recipe, progress: bool) -> list[int]:
    from tqdm.auto import tqdm

    bar = tqdm(total=recipe.trials, desc=f"search ({len(procs)} workers)", unit="trial", disable=not progress)
    try:
        while any(p.poll() is None for p in procs):
            with contextlib.suppress(Exception):  # a busy database: try again at the next poll
                bar.n = min(len(S.finished(recipe.study)), recipe.trials)
                bar.refresh()
            time.sleep(1.0)
        with contextlib.suppress(Exception):
            bar.n = min(len(S.finished(recipe.study)), recipe.trials)
            bar.refresh()
    finally:
        bar.close()
    return [p.returncode for p in procs]


def _stop(procs, grace: float = 120.0) -> list[int]:
    """Forward Ctrl-C to every running worker, give them ``grace`` seconds to stop cleanly, then kill."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        if p.poll() is None:
            p.kill()
            p.wait()
    return [p.returncode for p in procs]


def _collect_best_model(recipe) -> None:
    """Move the best trial's model from its worker's folder to ``DIR/best_trial_model``; drop the others."""
    saved = None
    with contextlib.suppress(ValueError):
        saved = recipe.study.best_trial.user_attrs.get("saved_model")
    target = recipe.output / "best_trial_model"
    workers = recipe.output / "workers"
    if saved and Path(saved).is_dir() and workers.resolve() in Path(saved).resolve().parents:
        tmp = target.with_name(f".{target.name}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.move(saved, tmp)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    for folder in workers.glob("*/best_trial_model"):
        shutil.rmtree(folder, ignore_errors=True)


def worker_failure(info: dict, tail: int = 15) -> str:
    """A message naming each failed worker, its exit code and the end of its log
    (``python -m helpers search --workers``; notebook 06)."""
    lines = []
    for k, (code, log) in enumerate(zip(info["exit_codes"], info["logs"])):
        if code:
            lines.append(f"worker {k} exited with code {code}; the end of {log}:")
            with contextlib.suppress(OSError):
                lines += ["  " + s for s in Path(log).read_text(encoding="utf-8", errors="replace").splitlines()[-tail:]]
    return "\n".join(lines)


__all__ = ["SearchReport", "SurplusTrial", "TrialBudget", "fail_dead_trials", "run_search", "SyncStop",
           "lockstep_search", "is_memory_storage", "check_workers", "worker_argv", "worker_env", "run_workers",
           "worker_failure"]
