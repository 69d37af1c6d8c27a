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
    styles = ["-", "--", "-.", ":"]
    for i, (label, rates) in enumerate(curves.items()):
        ax.plot(range(1, len(rates) + 1), rates, label=label, ls=styles[i % len(styles)], lw=1.8)
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


def _smooth(values, k: int):
    if len(values) < k or k < 2:
        return np.asarray(values, dtype=float)
    return np.convolve(values, np.ones(k) / k, mode="valid")


def plot_arms(results_by_arm: dict[str, list], title: str | None = None):
    """Rate (first seed), smoothed training loss (mean over seeds) and validation metric (mean, min-max band)."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (arm, results) in enumerate(results_by_arm.items()):
        c = colors[i % len(colors)]
        axes[0].plot(range(1, len(results[0].lr) + 1), results[0].lr, color=c, label=arm)
        n = min(len(r.train_loss) for r in results)
        if n:
            mean = np.mean([[p["loss"] for p in r.train_loss[:n]] for r in results], axis=0)
            k = max(1, n // 8)
            sm = _smooth(mean, k)
            axes[1].plot(np.arange(len(sm)) + k, sm, color=c)
    plot_seed_bands(results_by_arm, ax=axes[2])
    axes[0].set(title="learning rate (seed 0)", xlabel="optimizer step")
    axes[0].ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    axes[0].legend(fontsize=7)
    axes[1].set(title="training loss (mean over seeds, smoothed)", xlabel="optimizer step")
    axes[2].get_legend().remove() if axes[2].get_legend() else None
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return axes


def plot_range_test(rt, advice=(2e-5, 5e-5), ax=None):
    """Loss against rate on a log axis, the suggestions marked and the advised range shaded (notebook 01)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(rt.rates, rt.losses, alpha=0.3, label="loss per step")
    ax.plot(rt.rates, rt.smoothed, label="smoothed")
    ax.axvspan(*advice, color="green", alpha=0.12, label="syllabus: 2e-5 to 5e-5")
    styles = {"valley": "-", "steep": "--", "min/10": ":"}
    for name, lr in rt.suggestions.items():
        ax.axvline(lr, color="black", ls=styles.get(name, "-"), lw=1, label=f"{name}: {lr:.1e}")
    ax.set_xscale("log")
    ax.set(xlabel="learning rate", ylabel="training loss", title="learning-rate range test")
    ax.legend(fontsize=7)
    return ax


def min_max_bars(values) -> list[list[float]]:
    """Error-bar lengths from the mean down to the min and up to the max (never negative, even by rounding)."""
    v = np.asarray(values, dtype=float)
    m = v.mean()
    return [[max(0.0, m - v.min())], [max(0.0, v.max() - m)]]


def plot_quality_vs_speed(results_by_arm: dict[str, list], key: str = "test", ax=None, title: str | None = None):
    """Each arm as a point: mean training steps per second (x) against mean score (y), min-max bars over seeds (notebook 02)."""
    from .freezing import train_speed

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
    """Heat map of a :meth:`helpers.freezing.WeightMovement.table`: parts (top layer first) x epochs; 0 = frozen."""
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
    """Grouped bars: the rate each part (embeddings, layer 0 ... top) got under each arm (``result.layer_lrs``)."""
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
