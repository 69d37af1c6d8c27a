"""Plots of one run and of schedules compared across seeds (notebooks 00 and 01): rates, losses, range test."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .common import plot_seed_bands, smooth



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


def plot_test_points(results_by_arm: dict[str, list], untuned: float | None = None, ax=None, metric: str = "nDCG@10"):
    """Each seed's test score per arm (dots), the arm's mean (a bar) and the untuned model (dashed) (notebook 01)."""
    ax = ax or plt.gca()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (arm, results) in enumerate(results_by_arm.items()):
        ys = [r.test_metric for r in results]
        ax.scatter([i] * len(ys), ys, color=colors[i % len(colors)], s=18, zorder=3)
        ax.hlines(float(np.mean(ys)), i - 0.3, i + 0.3, color=colors[i % len(colors)], lw=2)
    if untuned is not None:
        ax.axhline(untuned, color="grey", ls="--", lw=1, label="untuned")
        ax.legend(fontsize=7, loc="lower left")
    ax.set_xticks(range(len(results_by_arm)), [a.replace(", ", ",\n") for a in results_by_arm], fontsize=7,
                  rotation=30, ha="right")
    ax.set(title=f"test {metric} per seed (bar: mean)")
    return ax


def plot_arms(results_by_arm: dict[str, list], title: str | None = None, key: str = "dev",
              untuned: float | None = None):
    """Rate (first seed), smoothed training loss (mean over seeds) and, with ``key="dev"``, the validation metric
    (mean, min-max band) or, with ``key="test"``, each seed's test score against ``untuned`` (notebook 01)."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (arm, results) in enumerate(results_by_arm.items()):
        c = colors[i % len(colors)]
        axes[0].plot(range(1, len(results[0].lr) + 1), results[0].lr, color=c, label=arm)
        n = min(len(r.train_loss) for r in results)
        if n:
            mean = np.mean([[p["loss"] for p in r.train_loss[:n]] for r in results], axis=0)
            k = max(1, n // 8)
            sm = smooth(mean, k)
            axes[1].plot(np.arange(len(sm)) + k, sm, color=c)
    if key == "test":
        first = next(iter(results_by_arm.values()))[0]
        plot_test_points(results_by_arm, untuned, ax=axes[2], metric=first.metric)
    else:
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
    """Loss against rate on a log axis, the suggestions marked and the advised range shaded (notebook 01).

    With a probe batch, its loss is the curve (left axis) and its Spearman (scored pairs) or else each
    step's training loss is drawn on a right axis of its own."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.6))
    handles = []
    if rt.probe_losses:
        right = ax.twinx()
        if rt.probe_spearman:
            handles += right.plot(rt.rates, rt.probe_spearman, color="C1", lw=1.2, label="fixed batch: Spearman (right)")
            right.set_ylabel("Spearman on the fixed batch", color="C1")
        else:
            handles += right.plot(rt.rates, rt.losses, color="grey", alpha=0.3, lw=1,
                                  label="training loss of each step (right)")
            right.set_ylabel("training loss of the step", color="grey")
        handles += ax.plot(rt.rates, rt.probe_losses, ".", color="C0", ms=3, label=f"fixed batch of {rt.probe_size}")
        handles += ax.plot(rt.rates, rt.smoothed, color="C0", label="fixed batch, smoothed")
        ax.set_ylabel(f"loss on a fixed batch of {rt.probe_size}")
    else:
        handles += ax.plot(rt.rates, rt.losses, alpha=0.3, label="loss per step")
        handles += ax.plot(rt.rates, rt.smoothed, label="smoothed")
        ax.set_ylabel("training loss")
    handles.append(ax.axvspan(*advice, color="green", alpha=0.12, label="syllabus: 2e-5 to 5e-5"))
    styles = {"valley": "-", "steep": "--", "min/10": ":"}
    for name, lr in rt.suggestions.items():
        handles.append(ax.axvline(lr, color="black", ls=styles.get(name, "-"), lw=1, label=f"{name}: {lr:.1e}"))
    ax.set_xscale("log")
    ax.set(xlabel="learning rate", title=f"learning-rate range test (rules {rt.spread:.1f} orders of magnitude apart)")
    ax.legend(handles=handles, fontsize=7, loc="lower left")
    return ax


__all__ = ["plot_run", "plot_lr_curves", "plot_before_after", "plot_arms", "plot_range_test"]
