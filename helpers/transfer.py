"""Does the subset's ranking hold on more data, and what did the search cost? (notebook 06).

Experiments layer, on top of :mod:`helpers.tuning`: the best and worst trials
are re-run on more training data (:func:`transfer_check`), their rankings
compared (:func:`rank_correlation`), and the search's cost measured against an
estimate for the larger data (:func:`cost_comparison`, :func:`pruning_savings`).
"""
from __future__ import annotations

import math

from .batching import steps_per_epoch
from .settings import TrainConfig
from .training import train
from .tuning import SPACE, config_from_params, finished, subset_score


def pick_for_transfer(study, top: int = 3, bottom: int = 2) -> tuple[list, list]:
    """The ``top`` best completed trials and the ``bottom`` worst other finished ones (pruned included), best first
    (notebook 06)."""
    from optuna.trial import TrialState

    done = [t for t in finished(study) if math.isfinite(subset_score(t))]
    complete = sorted((t for t in done if t.state == TrialState.COMPLETE), key=subset_score, reverse=True)
    best = complete[:top]
    rest = sorted((t for t in done if t not in best), key=subset_score)
    worst = rest[:bottom]
    return best, sorted(worst, key=subset_score, reverse=True)


def transfer_counts(n_trials: int) -> tuple[int, int]:
    """How many top and bottom trials the transfer check re-runs: (3, 2) for 10+ trials, else (2, 2) (notebook 06)."""
    return (3, 2) if n_trials >= 10 else (2, 2)


def transfer_check(trials, base: TrainConfig, data, space: dict = SPACE, progress: bool = True) -> dict:
    """Re-run each trial's configuration on ``data`` (more training pairs), test score included.

    Returns ``{trial number: TrainResult}`` (models dropped). Notebook 06.
    """
    from tqdm.auto import tqdm

    base = base.replace(final_test=True, output_dir=None)
    out = {}
    for t in tqdm(trials, desc="transfer runs", unit="run", disable=not progress):
        r = train(config_from_params(base, t.params, space), data=data, progress=False)
        r.model = None
        out[t.number] = r
    return out


def rank_correlation(trials, results: dict, key: str = "test") -> tuple[float, float]:
    """Spearman rank correlation (and its p-value) between subset scores and the re-runs' ``key`` scores
    (notebook 06)."""
    from scipy.stats import spearmanr

    xs = [subset_score(t) for t in trials]
    ys = [results[t.number].summary()[key] for t in trials]
    rho, p = spearmanr(xs, ys)
    return float(rho), float(p)


def cost_comparison(study, trials, results: dict) -> dict:
    """Measured seconds of the subset search against an estimate for the same trials on the larger data (notebook 06).

    The multiplier is measured: for the re-run trials that completed on the
    subset, the larger run's seconds over the subset trial's seconds (fixed
    costs such as loading and evaluating do not grow with the data, so it is
    below the data ratio). Pruned trials are assumed pruned at the same point.
    """
    from optuna.trial import TrialState

    done = finished(study)
    subset_s = sum(t.user_attrs.get("wall_s", 0.0) for t in done)
    ratios = [results[t.number].wall_time / t.user_attrs["wall_s"] for t in trials
              if t.state == TrialState.COMPLETE and t.user_attrs.get("wall_s")]
    n_sub = next((t.user_attrs["train_examples"] for t in done if t.user_attrs.get("train_examples")), 0)
    n_big = next(iter(results.values())).train_examples if results else 0
    mult = sum(ratios) / len(ratios) if ratios else (n_big / n_sub if n_sub else float("nan"))
    return {"trials": len(done), "pruned": sum(t.state == TrialState.PRUNED for t in done),
            "subset pairs": n_sub, "larger pairs": n_big, "subset search s": subset_s,
            "measured multiplier": mult, "estimated larger-data search s": subset_s * mult,
            "transfer re-runs s": sum(r.wall_time for r in results.values())}


def transfer_table(trials, results: dict, untuned: dict | None = None):
    """One row per re-run trial: its subset score and state, and the larger run's dev and test scores and seconds
    (notebook 06).

    ``untuned``: ``{"dev", "test"}`` of the model before any training (:func:`helpers.experiments.untuned_scores`),
    added as a last row, the line every re-run must beat.
    """
    import pandas as pd

    rows = [{"trial": t.number, "on the subset": t.state.name.lower(), "subset score": round(subset_score(t), 4),
             "larger data: dev": round(results[t.number].dev_metric, 4),
             "larger data: test": round(results[t.number].test_metric, 4),
             "seconds": round(results[t.number].wall_time, 1)} for t in trials]
    if untuned is not None:
        rows.append({"trial": "untuned", "on the subset": "", "subset score": float("nan"),
                     "larger data: dev": round(untuned["dev"], 4), "larger data: test": round(untuned["test"], 4),
                     "seconds": float("nan")})
    return pd.DataFrame(rows).set_index("trial")


def pruning_savings(study, epochs: float) -> dict:
    """Optimizer steps the trials ran against the steps they would have run without pruning (notebook 06)."""
    ran = planned = 0
    for t in finished(study):
        n, batch = t.user_attrs.get("train_examples"), t.params.get("batch_size")
        if not n or not batch:
            continue
        ran += t.user_attrs.get("steps", 0)
        planned += math.ceil(steps_per_epoch(n, batch) * epochs)
    return {"steps run": ran, "steps without pruning": planned, "saved": 1 - ran / planned if planned else 0.0}


__all__ = ["pick_for_transfer", "transfer_counts", "transfer_check", "rank_correlation", "cost_comparison",
           "transfer_table", "pruning_savings"]
