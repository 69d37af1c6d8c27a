"""Running several configurations ("arms") over several seeds, with one progress bar (notebooks 01-06).

Experiments layer. :func:`run_grid` is the one grid runner: every arm is a
:class:`helpers.TrainConfig` (or a ``(TrainConfig, Task)`` pair when arms
train on different data, notebook 05); every run is a real fine-tuning. It can
also measure each run's training-only speed (``speed=True``, notebooks 02 and
03) and activation memory (``memory=True``, notebook 03). It returns a
:class:`GridResult`: ``{arm: [one entry per seed]}`` with the grid's
``wall_time``. Results keep their histories but drop their models, so a grid
of dozens of runs fits in memory.
"""
from __future__ import annotations

import time

from .measure import activation_memory_callback, step_timer
from .settings import TrainConfig
from .training import train


class GridResult(dict):
    """``{arm: [TrainResult (or a recorded row) per seed]}`` plus ``wall_time``, the grid's seconds (notebooks 01-06)."""

    def __init__(self, *args, wall_time: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.wall_time = wall_time

    def __or__(self, other):
        """``a | b``: both grids' arms; their wall times add up (notebook 03 joins two grids)."""
        return GridResult({**self, **other}, wall_time=self.wall_time + getattr(other, "wall_time", 0.0))

    def __ior__(self, other):
        self.update(other)
        self.wall_time += getattr(other, "wall_time", 0.0)
        return self


def run_grid(arms: dict, seeds, data=None, keep_models: bool = False, progress: bool = True, speed: bool = False,
             memory: bool = False, record=None, callbacks=(), **train_kwargs) -> GridResult:
    """Train every arm with every seed (seeds outer, arms inner); returns a :class:`GridResult` (notebooks 01-06).

    ``arms``: ``{name: TrainConfig}``, or ``{name: (TrainConfig, Task)}`` when each arm has its own data.
    ``data`` is a prepared task shared by all runs (see :func:`helpers.prepare_task`).
    With shared data the untuned model is evaluated once, not once per run: its
    step-0 evaluation is the same for every arm that shares the model, the
    sequence length and the loss (see :func:`start_key`).
    ``speed=True`` adds ``result.train_steps_per_sec`` and ``result.train_s_per_epoch``
    (optimizer steps alone, without evaluations); ``memory=True`` adds
    ``result.activation_mb`` (:class:`helpers.measure.ActivationMemory`).
    ``record(result, seed)``: what to keep per run instead of the result
    (called while the model is still there; notebook 05 scores every task).
    A tqdm bar counts runs and shows the last run's test score.
    """
    from tqdm.auto import tqdm

    seeds = list(seeds)
    timer, act = step_timer() if speed else None, activation_memory_callback() if memory else None
    callbacks = [*(c for c in (timer, act) if c is not None), *callbacks]
    results = GridResult({name: [] for name in arms})
    starts: dict = {}  # start_key -> the untuned model's step-0 evaluation
    bar = tqdm(total=len(arms) * len(seeds), desc="runs", unit="run", disable=not progress)
    start = time.perf_counter()
    try:
        for seed in seeds:
            for name, arm in arms.items():
                bar.set_description(f"{name} (seed {seed})")
                cfg, task = arm if isinstance(arm, tuple) else (arm, data)
                r = _one_run(cfg.replace(seed=seed), task, starts, callbacks, train_kwargs)
                _add_measurements(r, timer, act)
                value = record(r, seed) if record is not None else r
                if not keep_models:
                    r.model = None
                results[name].append(value)
                if r.test_metric == r.test_metric:  # no test score (final_test off, e.g. notebook 05's cross grid): no postfix
                    bar.set_postfix(test=f"{r.test_metric:.4f}")
                bar.update(1)
    finally:
        bar.close()
    results.wall_time = time.perf_counter() - start
    return results


def _one_run(cfg: TrainConfig, task, starts: dict, callbacks, train_kwargs: dict):
    """One run of a grid, sharing the untuned model's step-0 evaluation through ``starts``."""
    shared = task is not None and not {"start_eval", "model"} & set(train_kwargs)
    key = start_key(cfg, task) if shared else None
    kwargs = dict(train_kwargs)
    if callbacks:
        kwargs["callbacks"] = callbacks
    r = train(cfg, data=task, progress=False, start_eval=starts.get(key), **kwargs)
    if key is not None and key not in starts and r.evals and r.evals[0]["step"] == 0:
        starts[key] = dict(r.evals[0])
    return r


def _add_measurements(result, timer, act) -> None:
    """Copy the latest run's training-only time and activation memory onto its result."""
    if timer is not None:
        t = timer.runs[-1]
        result.train_steps_per_sec = t["steps"] / t["seconds"] if t["seconds"] else 0.0
        result.train_s_per_epoch = t["seconds"] / max(result.config.get("epochs") or 1, 1e-9)
    if act is not None:
        result.activation_mb = act.runs[-1]


def start_key(cfg: TrainConfig, data) -> tuple:
    """What the untuned model's step-0 evaluation depends on: model, sequence length, loss, data (notebooks 01-05).

    Freezing, rates, schedules, batch size and seed do not change it, so a grid
    shares one evaluation across them (``None`` loss means the data's default).
    """
    r = cfg.resolved()
    return (r.model, r.max_seq_length, r.loss, r.loss_scale, r.mini_batch_size, r.eval_batch_size, r.eval_loss,
            r.device, id(data))


def untuned_scores(cfg: TrainConfig, task) -> dict:
    """The untuned model's ``{"dev", "test"}`` scores on ``task``, encoded as ``cfg``'s runs are (its model,
    device and maximum length): the line every trained arm must clearly beat (notebook 02's code-search verdicts).
    """
    from .config import pick_device
    from .evaluation import score
    from .models import load_model

    rc = cfg.resolved()
    model = load_model(rc.model, device=pick_device(rc.device), max_seq_length=rc.max_seq_length)
    return {"dev": score(model, task.dev_evaluator), "test": score(model, task.test_evaluator)}


__all__ = ["GridResult", "run_grid", "start_key", "untuned_scores"]

