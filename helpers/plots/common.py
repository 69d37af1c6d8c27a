"""What the plots of every lesson share: min-max bars, smoothing, epoch lines, mean curves with seed bands.

Presentation layer (matplotlib), like the whole of :mod:`helpers.plots`.
"""
from __future__ import annotations

from collections import defaultdict

import matplotlib.pyplot as plt
import numpy as np



def min_max_bars(values) -> list[list[float]]:
    """Error-bar lengths from the mean down to the min and up to the max (never negative, even by rounding)
    (notebooks 02 and 04)."""
    v = np.asarray(values, dtype=float)
    m = v.mean()
    return [[max(0.0, m - v.min())], [max(0.0, v.max() - m)]]


def smooth(values, k: int):
    """Moving average over ``k`` values (the values unchanged when fewer than ``k``) (notebooks 01 and 04)."""
    if len(values) < k or k < 2:
        return np.asarray(values, dtype=float)
    return np.convolve(values, np.ones(k) / k, mode="valid")


def epoch_lines(ax, result) -> None:
    """Dotted vertical lines at the epoch boundaries of a run (notebook 04)."""
    per_epoch = None
    for p in result.train_loss:
        if p.get("epoch") and p["epoch"] >= 1:
            per_epoch = round(p["step"] / p["epoch"])
            break
    if not per_epoch:
        return
    for k in range(per_epoch, (result.steps or 0) + 1, per_epoch):
        ax.axvline(k, color="grey", lw=0.6, ls=":", zorder=0)


def plot_seed_bands(results_by_arm: dict[str, list], key: str = "metric", ax=None, title: str | None = None):
    """Validation metric (or loss) per arm: mean line and min-max band across seeds (notebooks 01 and 03)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.6))
    for arm, results in results_by_arm.items():
        by_step = defaultdict(list)
        for r in results:
            for e in r.evals:
                if e.get(key) is not None:
                    by_step[e["step"]].append(e[key])
        steps = sorted(by_step)
        vals = [by_step[s] for s in steps]
        mean = np.array([np.mean(v) for v in vals])
        ax.plot(steps, mean, marker="o", ms=3, label=arm)
        ax.fill_between(steps, [min(v) for v in vals], [max(v) for v in vals], alpha=0.2)
    metric = results_by_arm and next(iter(results_by_arm.values()))[0].metric
    ax.set(title=title or f"validation {metric if key == 'metric' else 'loss'} (mean, min-max over seeds)",
           xlabel="optimizer step")
    ax.legend(fontsize=8)
    return ax


__all__ = ["min_max_bars", "smooth", "epoch_lines", "plot_seed_bands"]
