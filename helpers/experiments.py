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
    A tqdm bar counts runs and shows the last run's test score.
    """
    from tqdm.auto import tqdm

    seeds = list(seeds)
    results: dict[str, list] = {name: [] for name in arms}
    bar = tqdm(total=len(arms) * len(seeds), desc="runs", unit="run", disable=not progress)
    start = time.perf_counter()
    try:
        for seed in seeds:
            for name, cfg in arms.items():
                bar.set_description(f"{name} (seed {seed})")
                r = train(cfg.replace(seed=seed), data=data, progress=False, **train_kwargs)
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
