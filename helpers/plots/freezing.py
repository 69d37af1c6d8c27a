"""Plots for layer freezing (notebook 02): quality against speed, weight movement, rates per layer."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..freezing import train_speed
from .common import min_max_bars



def plot_quality_vs_speed(results_by_arm: dict[str, list], key: str = "test", ax=None, title: str | None = None):
    """Each arm as a point: mean training steps per second (x) against mean score (y), min-max bars over seeds (notebook 02)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.2))
    for name, runs in results_by_arm.items():
        xs = np.array([train_speed(r) for r in runs], dtype=float)
        ys = np.array([r.summary()[key] for r in runs], dtype=float)
        ax.errorbar(xs.mean(), ys.mean(), xerr=min_max_bars(xs), yerr=min_max_bars(ys), fmt="o", capsize=3)
        ax.annotate(name, (xs.mean(), ys.mean()), textcoords="offset points", xytext=(6, 4), fontsize=8)
    metric = next(iter(results_by_arm.values()))[0].metric
    ax.set(xlabel="training steps per second, evaluations excluded (higher is faster)", ylabel=f"{key} {metric}",
           title=title or "quality against speed (mean, min-max over seeds)")
    ax.grid(alpha=0.3)
    return ax


def plot_weight_movement(table, ax=None, title: str = "how far each part's weights moved (L2), per epoch"):
    """Heat map of a :meth:`helpers.freezing.WeightMovement.table`: parts (top layer first) x epochs; 0 = frozen
    (notebook 02)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(1.6 + 1.3 * table.shape[1], 3.8))
    t = table.iloc[::-1]
    im = ax.imshow(t.values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(t.shape[1]), t.columns)
    ax.set_yticks(range(t.shape[0]), t.index)
    peak = float(np.nanmax(t.values)) if t.size else 0.0
    for i in range(t.shape[0]):
        for j in range(t.shape[1]):
            v = t.values[i, j]
            ax.text(j, i, "0 (frozen)" if v == 0 else f"{v:.3f}", ha="center", va="center", fontsize=8,
                    color="white" if v < peak / 2 else "black")
    plt.colorbar(im, ax=ax, label="L2 distance moved")
    ax.set_title(title)
    return ax


def plot_layer_rates(rates_by_arm: dict[str, dict[str, float]], ax=None, title: str = "peak learning rate per part"):
    """Grouped bars: the rate each part (embeddings, layer 0 ... top) got under each arm (``result.layer_lrs``)
    (notebook 02)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 3.6))
    parts = list(next(iter(rates_by_arm.values())))
    parts = ["embeddings"] + [p for p in parts if p != "embeddings"]
    width = 0.8 / len(rates_by_arm)
    for j, (arm, rates) in enumerate(rates_by_arm.items()):
        ax.bar(np.arange(len(parts)) + j * width, [rates[p] for p in parts], width, label=arm)
    ax.set_xticks(np.arange(len(parts)) + 0.4 - width / 2, parts)
    ax.set(ylabel="learning rate", title=title)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.legend(fontsize=8)
    return ax


__all__ = ["plot_quality_vs_speed", "plot_weight_movement", "plot_layer_rates"]
