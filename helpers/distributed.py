"""Beyond one machine (README "Scaling out"): data-parallel training and parallel search workers.

Two independent ways to use more hardware:

**Data-parallel training** (``torchrun --nproc_per_node N`` or ``accelerate launch``). The launcher
starts one process per device and sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``;
:func:`helpers.train` then lets the library's trainer do DistributedDataParallel (gloo on CPUs, NCCL
on GPUs). Each process takes ``batch_size`` examples per forward pass, so one optimizer step sees
``batch_size x grad_accum x processes`` examples (``TrainResult.effective_batch``) and the
``lr_scaling`` rule scales the rate by that batch. The rest of this module makes the runner's own
steps safe with several processes:

- the trainer's checkpoints (early stopping) go to one temporary folder that every process of a
  node shares (:func:`shared_tempdir`), so every rank restores the same best checkpoint;
- validation metrics come from the trainer (rank 0 runs the evaluator, with the encoding shared
  across ranks, and broadcasts the numbers), and the final test score the same way
  (:func:`score_once`), so every rank returns the same :class:`helpers.TrainResult` and takes the
  same early-stopping decisions without further communication;
- only rank 0 saves the model, writes JSON and prints reports (:func:`is_main_process`);
- in-batch losses (``mnrl``, ``cached_mnrl``) gather the embeddings of every process before the
  softmax when ``TrainConfig.gather_across_devices`` is on (the default): sentence-transformers'
  ``gather_across_devices=True`` all-gathers anchors and candidates *with* gradients
  (``torch.distributed.nn.all_gather``), so each anchor ranks its positive against
  ``batch_size x processes - 1`` in-batch negatives instead of ``batch_size - 1``;
- the recipe's search under torchrun runs every trial on all processes together
  (:func:`lockstep_search`): rank 0 asks the study for a trial and broadcasts its parameters,
  and its pruner's decision at every evaluation (:class:`SyncStop`).

**Parallel search workers.** Several processes, on one machine or many, join one Optuna study
through its storage (a SQLite file on one machine, a database URL such as PostgreSQL for a
cluster). ``python -m helpers search --workers N`` starts N local workers of the same command and
waits for them (:func:`run_workers`); :class:`TrialBudget` keeps the workers together at exactly
the requested number of finished trials.

Used by :func:`helpers.train`, :class:`helpers.recipe.Recipe`, :func:`helpers.search.run_search`
and the command line (:mod:`helpers.cli`); ``python -m helpers.distributed`` trains one
configuration (for torchrun; see :func:`main`).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import timedelta
from pathlib import Path

from transformers import TrainerCallback

TIMEOUT = timedelta(minutes=30)  # how long a collective waits for the slowest process (the trainer's default)


# --------------------------------------------------------------------------- rank and world size


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def world_size() -> int:
    """Processes training together: the process group's size, else ``$WORLD_SIZE`` (set by torchrun), else 1."""
    dist = _dist()
    if dist is not None:
        return dist.get_world_size()
    return max(1, _env_int("WORLD_SIZE", 1))


def rank() -> int:
    """This process's number among all processes (0 is the main one)."""
    dist = _dist()
    if dist is not None:
        return dist.get_rank()
    return _env_int("RANK", 0) if world_size() > 1 else 0


def local_rank() -> int:
    """This process's number on its machine (which GPU it uses)."""
    return _env_int("LOCAL_RANK", 0) if world_size() > 1 else 0


def is_distributed() -> bool:
    """True when launched by torchrun / accelerate launch with more than one process."""
    return world_size() > 1


def is_main_process() -> bool:
    """True on rank 0 (and in an ordinary single process): the one that saves, writes and prints."""
    return rank() == 0


def _dist():
    """``torch.distributed`` when its process group is initialised, else None."""
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def local_device(device: str) -> str:
    """The device of this process: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun; anything else unchanged."""
    if is_distributed() and device == "cuda":
        return f"cuda:{local_rank()}"
    return device


def check_launch(device: str) -> None:
    """Raise ``ValueError`` when this launch cannot train data-parallel on ``device`` (before any training)."""
    if not is_distributed():
        return
    if device == "mps":
        raise ValueError("Several processes cannot share Apple's MPS device (no distributed backend supports it); "
                         "run one process, or use --device cpu.")
    if device.startswith("cuda"):
        import torch

        if local_rank() >= torch.cuda.device_count():
            raise ValueError(f"Process LOCAL_RANK={local_rank()} has no GPU: this machine has "
                             f"{torch.cuda.device_count()}; use --nproc_per_node {torch.cuda.device_count()} or fewer.")


def init_process_group(device: str) -> bool:
    """Join the launcher's process group once (gloo on CPU, NCCL on CUDA); True when distributed.

    :func:`helpers.train` calls it before it builds the trainer's arguments, which
    then reuse the group (the trainer gets ``ddp_backend`` to match).
    """
    if not is_distributed():
        return False
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return True
    check_launch(device)
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device if ":" in device else f"cuda:{local_rank()}"))
    dist.init_process_group(backend=backend(device), timeout=TIMEOUT)
    return True


def backend(device: str) -> str:
    """The collective backend for ``device``: NCCL for CUDA, gloo otherwise."""
    return "nccl" if device.startswith("cuda") else "gloo"


def barrier() -> None:
    """Wait until every process got here (nothing to wait for in a single process)."""
    dist = _dist()
    if dist is not None and dist.get_world_size() > 1:
        dist.barrier()


def broadcast(obj=None):
    """Rank 0's ``obj`` on every process (any picklable value); ``obj`` itself in a single process."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return obj
    box = [obj if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shared_tempdir(prefix: str = "workshop-run-") -> str:
    """A new temporary folder, the same path on every process (rank 0 names it, every process creates it).

    The trainer's checkpoints go there: rank 0 (on each machine) writes them and
    every rank restores the best one from the same path. The caller removes it.
    """
    if not is_distributed() or _dist() is None:
        return tempfile.mkdtemp(prefix=prefix)
    path = broadcast(tempfile.mkdtemp(prefix=prefix) if is_main_process() else None)
    os.makedirs(path, exist_ok=True)
    return path


def data_parallel_steps(n_examples: int, batch_size: int, grad_accum: int, processes: int) -> int:
    """Optimizer steps per epoch when ``processes`` train together; raises if a process would get no batch.

    The trainer drops the last incomplete batch under DDP (sentence-transformers sets
    ``dataloader_drop_last``) and deals whole rounds of one batch per process, so each
    process takes ``n // batch // processes`` batches per epoch.
    """
    from .training import ConfigError

    per_process = n_examples // batch_size // processes
    if per_process < 1:
        raise ConfigError("batch_size", batch_size,
                          f"at most {max(1, n_examples // processes)} for {n_examples} training examples on {processes} "
                          "processes (each process needs one full batch per step)",
                          "Use a smaller batch_size, more data, or fewer processes.")
    return max(1, -(-per_process // grad_accum))


def check_rows(rows: dict, batch_size: int) -> None:
    """Raise ``ValueError`` when a split in ``rows`` (name -> count) cannot give every process a full batch.

    The recipe under torchrun checks its search subset and its training data
    against the largest batch of the search space before anything trains.
    """
    n_proc = world_size()
    for name, n in rows.items():
        if n // batch_size // n_proc < 1:
            raise ValueError(f"The {name} has {n} rows: too few for batch_size={batch_size} on {n_proc} processes "
                             f"(each process needs a full batch per step, {batch_size * n_proc} rows). Use a larger "
                             "--subset or more data, or fewer processes.")


def score_once(model, evaluator) -> float:
    """The evaluator's main metric, computed once for all processes and the same on every one.

    Under torchrun rank 0 runs the evaluator while every rank encodes its share of
    the texts (sentence-transformers' ``distributed_evaluation``, what the trainer
    does for validation); the number is then broadcast. One process: :func:`helpers.evaluation.score`.
    """
    from .evaluation import score

    if _dist() is None or world_size() == 1:
        return score(model, evaluator)
    try:
        from sentence_transformers.util.distributed import distributed_evaluation
    except ImportError:  # sentence-transformers before 6.2: rank 0 encodes everything alone
        return broadcast(score(model, evaluator) if is_main_process() else None)

    with distributed_evaluation(model) as run:
        value = score(model, evaluator) if run else None
    return broadcast(value)


# --------------------------------------------------------------------------- the recipe's search under torchrun


class SyncStop(TrainerCallback):
    """Every process stops a trial together: rank 0's decision (its pruner's) is broadcast at each evaluation.

    Put it after :class:`helpers.search.PruningCallback` in the callbacks of rank 0;
    the other ranks have no trial and follow.
    """

    def on_evaluate(self, args, state, control, **kwargs):
        control.should_training_stop = bool(broadcast(bool(control.should_training_stop)))


def lockstep_search(study, objective, n_trials: int, base, data, space, progress: bool = True):
    """The recipe's search under torchrun: every trial trains on all processes together (data-parallel).

    Rank 0 runs the study (``objective`` must carry a :class:`SyncStop` callback) and
    broadcasts each trial's parameters before training it; the other ranks train the
    same configuration and stop when rank 0's pruner stops. Returns rank 0's
    :class:`helpers.search.SearchReport` on every rank. Used by :meth:`helpers.recipe.Recipe.search`.
    """
    from . import search as S
    from .training import train

    init_process_group(base.device or "cpu")
    if is_main_process():
        def leader(trial):
            params = S.suggest(trial, space)  # the objective's own suggest() returns these same values
            broadcast(("trial", params))
            return objective(trial)

        report = None
        try:
            report = S.run_search(study, leader, n_trials, progress=progress)
        finally:
            broadcast(("done", report))
        return report
    trial_base = S.search_base(base)
    while True:
        kind, payload = broadcast(None)
        if kind == "done":
            S.run_search.last_report = payload
            return payload
        r = train(S.config_from_params(trial_base, payload, space), data=data, progress=False, callbacks=[SyncStop()])
        r.model = None
        if r.stop_reason == "interrupted":
            raise KeyboardInterrupt


# --------------------------------------------------------------------------- several workers on one study


class SurplusTrial(Exception):
    """A trial started after the study already had enough trials finished or running (it is marked failed)."""


class TrialBudget:
    """Keeps several workers at exactly ``n_trials`` finished (completed + pruned) trials (``run_search``).

    :meth:`callback` stops a worker when the trials finished and running (by any
    worker) fill the budget; :meth:`guard` catches the rare race in which two
    workers both started the last trial: the trials count in the order of their
    numbers, and one beyond the budget stops at once, marked failed, before it
    trains. A worker's killed trial keeps counting as running until Optuna's
    heartbeat marks it failed (90 s); running the command again then adds what is missing.
    """

    def __init__(self, n_trials: int):
        self.n_trials = n_trials

    def full(self, study) -> bool:
        """True when the trials finished and running (any worker's) already fill the budget."""
        import optuna
        from optuna.trial import TrialState

        with contextlib.suppress(Exception), warnings.catch_warnings():  # e.g. a study without heartbeats
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        taken = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
        return len(taken) >= self.n_trials

    def callback(self, study, trial) -> None:
        if self.full(study):
            study.stop()

    def guard(self, objective):
        from optuna.trial import TrialState

        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)

        def guarded(trial):
            earlier = [t for t in trial.study.get_trials(deepcopy=False, states=states) if t.number < trial.number]
            if len(earlier) >= self.n_trials:
                with contextlib.suppress(RuntimeError):  # stop() only works inside study.optimize
                    trial.study.stop()
                raise SurplusTrial(f"trial {trial.number}: the study already holds {len(earlier)} trials "
                                   f"finished or running (asked for {self.n_trials})")
            return objective(trial)

        return guarded


def is_memory_storage(storage: str | None) -> bool:
    """True for storages that live in one process's memory (no storage, ``sqlite://``, ``:memory:``)."""
    if storage is None:
        return True
    s = str(storage).strip()
    return s.rstrip("/").lower() in ("sqlite:", "memory", ":memory:") or ":memory:" in s or "mode=memory" in s


def check_workers(workers: int | None, storage: str | None) -> None:
    """Raise ``ValueError`` for a ``--workers`` request that cannot work (before anything trains)."""
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
    """The ``search`` command line of one local worker: ``args`` as parsed, with its own number, storage and folder."""
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


def _gpu_count() -> int:
    from .devices import gpu_count

    return gpu_count()


def worker_env(base: dict, k: int, n_workers: int, n_gpus: int, cpu_count: int | None = None) -> dict:
    """The environment of local search worker ``k`` of ``n_workers`` (:func:`run_workers`).

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
    """Start ``args.workers`` local ``search`` workers on the recipe's study, wait for all, report (``--workers N``).

    Worker ``k`` runs ``python -m helpers search`` with the same options,
    ``--worker args.worker * N + k`` (its sampler seed), the recipe's storage and
    study name, ``--output DIR/workers/k`` (its own summary and best model) and its
    log in ``DIR/workers/worker-k.log``; on a machine with GPUs it sees only GPU ``k % GPUs``
    (:func:`worker_env`). Ctrl-C is forwarded to every worker (each
    stops after its trial cleanly). Returns ``{"count", "exit_codes", "logs",
    "trials_by_worker", "interrupted", "wall_s"}``; the best trial's model is moved
    to ``DIR/best_trial_model``. Used by :mod:`helpers.cli`.
    """
    from . import search as S

    n = args.workers
    folder = recipe.output / "workers"
    folder.mkdir(parents=True, exist_ok=True)
    storage = S.storage_url(recipe.storage)
    gpus = _gpu_count()
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

    from . import search as S

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
    """A message naming each failed worker, its exit code and the end of its log."""
    lines = []
    for k, (code, log) in enumerate(zip(info["exit_codes"], info["logs"])):
        if code:
            lines.append(f"worker {k} exited with code {code}; the end of {log}:")
            with contextlib.suppress(OSError):
                lines += ["  " + s for s in Path(log).read_text(encoding="utf-8", errors="replace").splitlines()[-tail:]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- one run under torchrun


def main(argv=None) -> int:
    """``python -m helpers.distributed --config '{...}'``: one :func:`helpers.train` run, for torchrun.

    Every process prints one JSON line ``{"rank", "world_size", "effective_batch",
    "learning_rate", "steps", "dev", "test", ...}`` (so the ranks can be compared);
    rank 0 alone saves the model (``output_dir`` in the config) and ``--result FILE``.
    Example: ``torchrun --nproc_per_node 2 -m helpers.distributed --config '{"max_steps": 2}'``.
    """
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m helpers.distributed", description=main.__doc__.splitlines()[0])
    p.add_argument("--config", default="{}", help="TrainConfig settings as a JSON object")
    p.add_argument("--result", help="rank 0 writes the TrainResult here as JSON")
    a = p.parse_args(argv)
    from .training import TrainConfig, train

    settings = json.loads(a.config)
    for key in ("score_range", "frozen_parts"):
        if isinstance(settings.get(key), list):
            settings[key] = tuple(settings[key])
    r = train(TrainConfig(**settings), progress=False)
    line = {"rank": rank(), "world_size": world_size(), "effective_batch": r.effective_batch,
            "learning_rate": r.learning_rate, "steps": r.steps, "dev": r.dev_metric, "test": r.test_metric,
            "stop_reason": r.stop_reason, "train_loss": [e["loss"] for e in r.train_loss], "wall_s": r.wall_time}
    print("RESULT " + json.dumps(line), flush=True)
    if a.result and is_main_process():
        r.save_json(a.result)
    barrier()
    return 0


__all__ = ["world_size", "rank", "local_rank", "is_distributed", "is_main_process", "local_device", "check_launch",
           "init_process_group", "backend", "barrier", "broadcast", "shared_tempdir", "data_parallel_steps",
           "check_rows", "score_once", "SyncStop", "lockstep_search", "SurplusTrial", "TrialBudget",
           "is_memory_storage", "check_workers", "worker_argv", "worker_env", "run_workers", "worker_failure", "main"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
