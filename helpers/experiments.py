"""Running several configurations ("arms") over several seeds, with one progress bar (notebooks 01-06).

Every arm is a :class:`helpers.training.TrainConfig`; every run is a real
fine-tuning. Results keep their histories but drop their models, so a grid of
dozens of runs fits in memory.
"""
from __future__ import annotations

import time

from .training import TrainConfig, train


def run_grid(arms: dict[str, TrainConfig], seeds, data=None, keep_models: bool = False, progress: bool = True,
             **train_kwargs) -> dict[str, list]:
    """Train every arm with every seed; returns ``{arm: [TrainResult per seed]}``.

    ``data`` is a prepared task shared by all runs (see :func:`helpers.prepare_task`).
    With shared data the untuned model is evaluated once, not once per run: its
    step-0 evaluation is the same for every arm that shares the model, the
    sequence length and the loss (see :func:`start_key`).
    A tqdm bar counts runs and shows the last run's test score.
    """
    from tqdm.auto import tqdm

    seeds = list(seeds)
    results: dict[str, list] = {name: [] for name in arms}
    starts: dict = {}  # start_key -> the untuned model's step-0 evaluation
    bar = tqdm(total=len(arms) * len(seeds), desc="runs", unit="run", disable=not progress)
    start = time.perf_counter()
    try:
        for seed in seeds:
            for name, cfg in arms.items():
                bar.set_description(f"{name} (seed {seed})")
                key = start_key(cfg, data) if data is not None and not {"start_eval", "model"} & set(train_kwargs) else None
                r = train(cfg.replace(seed=seed), data=data, progress=False, start_eval=starts.get(key), **train_kwargs)
                if key is not None and key not in starts and r.evals and r.evals[0]["step"] == 0:
                    starts[key] = dict(r.evals[0])
                if not keep_models:
                    r.model = None
                results[name].append(r)
                bar.set_postfix(test=f"{r.test_metric:.4f}")
                bar.update(1)
    finally:
        bar.close()
    results_wall = time.perf_counter() - start
    run_grid.last_wall_time = results_wall
    return results


run_grid.last_wall_time = 0.0


def start_key(cfg: TrainConfig, data) -> tuple:
    """What the untuned model's step-0 evaluation depends on: model, sequence length, loss, data.

    Freezing, rates, schedules, batch size and seed do not change it, so a grid
    shares one evaluation across them (``None`` loss means the data's default).
    """
    r = cfg.resolved()
    return (r.model, r.max_seq_length, r.loss, r.loss_scale, r.mini_batch_size, r.eval_batch_size, r.eval_loss,
            r.device, id(data))
