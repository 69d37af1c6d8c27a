"""Plots shared by the notebooks (matplotlib): training curves, rates, and comparisons across seeds."""
from __future__ import annotations

from collections import defaultdict

import matplotlib.pyplot as plt
import numpy as np


def plot_run(result, title: str | None = None, axes=None):
    """Three panels for one run: rate per step, training loss, validation metric (notebook 00 and others)."""
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    ax_lr, ax_loss, ax_dev = axes
    ax_lr.plot(range(1, len(result.lr) + 1), result.lr)
    ax_lr.set(title="learning rate", xlabel="optimizer step", ylabel="rate")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    steps = [p["step"] for p in result.train_loss]
    losses = [p["loss"] for p in result.train_loss]
    ax_loss.plot(steps, losses, alpha=0.35, label="per step")
    if len(losses) >= 5:
        k = max(2, len(losses) // 10)
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax_loss.plot(steps[k - 1 :], smooth, label=f"mean of {k}")
    ax_loss.set(title="training loss", xlabel="optimizer step")
    ax_loss.legend(fontsize=8)
    ev = [e for e in result.evals if e.get("metric") is not None]
    ax_dev.plot([e["step"] for e in ev], [e["metric"] for e in ev], marker="o")
    ax_dev.set(title=f"validation {result.metric}", xlabel="optimizer step")
    if title:
        plt.suptitle(title)
    plt.tight_layout()
    return axes


def plot_lr_curves(curves: dict[str, list[float]], ax=None, title: str = "learning rate per optimizer step"):
    """Several rate curves on shared axes (notebook 01)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.6))
    for label, rates in curves.items():
        ax.plot(range(1, len(rates) + 1), rates, label=label)
    ax.set(title=title, xlabel="optimizer step", ylabel="learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.legend(fontsize=8)
    return ax


def plot_seed_bands(results_by_arm: dict[str, list], key: str = "metric", ax=None, title: str | None = None):
    """Validation metric (or loss) per arm: mean line and min-max band across seeds."""
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


def plot_before_after(before: float, after: float, metric: str, ax=None, labels=("untuned", "fine-tuned")):
    """Two bars: the score before and after fine-tuning (notebook 00)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3))
    bars = ax.bar(labels, [before, after], color=["#999999", "#3b75af"])
    for b, v in zip(bars, [before, after]):
        ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.4f}", ha="center", va="bottom")
    lo = min(before, after)
    ax.set_ylim(max(0, lo - 0.1), min(1, max(before, after) + 0.05))
    ax.set(title=f"test {metric}")
    return ax
