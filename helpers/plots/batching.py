"""Plots for notebook 03: the batch x rate grid against the scaling rules, costs per batch, in-batch negative arms."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..batching import RULE_EXPONENTS, best_rates, fitted_exponent
from .common import plot_seed_bands


SCALING_RULE_STYLES = {"none": ":", "sqrt": "--", "linear": "-"}  # one line style per batch-size rule


def plot_rate_grid(table, base_lr: float, base_batch: int, key: str = "dev", metric: str = "Spearman", best=None):
    """Left: score against rate, one line per batch size. Right: the best rate per batch against the rules
    (notebook 03).

    ``table``: :func:`helpers.batching.grid_table`; ``best``:
    :func:`helpers.batching.best_rates` (computed from ``table`` when omitted).
    The rules start from ``base_lr`` at ``base_batch``; a star marks each batch
    size's best rate, grey dots the rates tried.
    """
    best = best_rates(table, key) if best is None else best
    fig, (ax_s, ax_r) = plt.subplots(1, 2, figsize=(13, 4.2))
    for b, part in table.groupby("batch"):
        part = part.sort_values("rate")
        ax_s.errorbar(part["rate"], part[key], yerr=part[f"{key} sd"], marker="o", capsize=3, label=f"batch {b}")
    ax_s.set_xscale("log")
    ax_s.set(xlabel="peak learning rate", ylabel=f"{key} {metric} (mean ± sd over seeds)",
             title="score against rate, per batch size")
    ax_s.legend(fontsize=8)
    batches = np.array(sorted(table["batch"].unique()), dtype=float)
    xs = np.geomspace(batches.min() / 1.3, batches.max() * 1.3, 50)
    for rule, p in RULE_EXPONENTS.items():
        ax_r.plot(xs, base_lr * (xs / base_batch) ** p, SCALING_RULE_STYLES[rule], color="black", lw=1.2,
                  label=f"{rule} (x batch^{p:g})")
    ax_r.scatter(table["batch"], table["rate"], color="grey", s=18, zorder=3, label="rates tried")
    ax_r.scatter(best.index, best["rate"], marker="*", s=220, color="tab:red", zorder=4, label=f"best by {key}")
    slope = fitted_exponent(best.index, best["rate"])
    if np.isfinite(slope):
        ax_r.plot(xs, np.exp(np.polyval(np.polyfit(np.log(best.index.astype(float)), np.log(best["rate"]), 1),
                                        np.log(xs))), color="tab:red", alpha=0.5, label=f"fit: batch^{slope:.2f}")
    ax_r.set_xscale("log", base=2)
    ax_r.set_yscale("log")
    ax_r.set_xticks(batches, [str(int(b)) for b in batches])
    ax_r.set(xlabel="batch size", ylabel="peak learning rate", title="best rate per batch against the rules")
    ax_r.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_batch_costs(table):
    """Training seconds per epoch and activation memory per batch size (mean over the arms and seeds of each)
    (notebook 03)."""
    by = table.groupby("batch")[["train s/epoch", "activation MB", "peak MB"]].mean()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    labels = [str(b) for b in by.index]
    axes[0].bar(labels, by["train s/epoch"], color="#3b75af")
    axes[0].set(xlabel="batch size", ylabel="seconds", title="training time per epoch (evaluations excluded)")
    axes[1].bar(labels, by["activation MB"], color="#e08a2c")
    axes[1].set(xlabel="batch size", ylabel="MiB", title="activation memory (kept for backward), peak per step")
    for ax, col in zip(axes, ["train s/epoch", "activation MB"]):
        for i, v in enumerate(by[col]):
            ax.text(i, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    return fig


def plot_arms_costs(results_by_arm: dict[str, list], untuned: float | None = None, metric: str = "nDCG@10"):
    """Per arm: test score (mean, min-max over seeds), training time per epoch and activation memory (notebook 03).

    Runs come from ``hp.run_grid(..., speed=True, memory=True)`` (``train_s_per_epoch``, ``activation_mb``).
    """
    names = list(results_by_arm)
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    y = np.arange(len(names))
    test = [np.array([r.test_metric for r in results_by_arm[n]]) for n in names]
    means = np.array([t.mean() for t in test])
    err = np.array([[m - t.min() for m, t in zip(means, test)], [t.max() - m for m, t in zip(means, test)]])
    axes[0].barh(y, means, xerr=err, color="#3b75af", capsize=3)
    if untuned is not None:
        axes[0].axvline(untuned, color="grey", ls="--", label=f"untuned {untuned:.3f}")
        axes[0].legend(fontsize=8, loc="lower right")
    lo = min(float(means.min() - err[0].max()), untuned if untuned is not None else 1.0)
    axes[0].set_xlim(max(0.0, lo - 0.02), min(1.0, float((means + err[1]).max()) + 0.02))
    axes[0].set(title=f"test {metric} (mean, min-max over seeds)")
    secs = [np.mean([getattr(r, "train_s_per_epoch", r.wall_time) for r in results_by_arm[n]]) for n in names]
    mem = [np.mean([getattr(r, "activation_mb", np.nan) for r in results_by_arm[n]]) for n in names]
    axes[1].barh(y, secs, color="#6a9f58")
    axes[1].set(title="training seconds per epoch")
    axes[2].barh(y, mem, color="#e08a2c")
    axes[2].set(title="activation memory, MiB (peak per step)")
    for ax in axes:
        ax.set_yticks(y, names if ax is axes[0] else [""] * len(names))
        ax.invert_yaxis()
    fig.tight_layout()
    return fig


def plot_weight_decay(results_by_arm: dict[str, list], metric: str = "Spearman"):
    """Training loss (mean over seeds), validation loss and validation metric (mean, min-max band) per weight decay
    (notebook 03)."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    for arm, runs in results_by_arm.items():
        n = min(len(r.train_loss) for r in runs)
        if n:
            mean = np.mean([[p["loss"] for p in r.train_loss[:n]] for r in runs], axis=0)
            axes[0].plot([p["step"] for p in runs[0].train_loss[:n]], mean, label=arm)
    axes[0].set(title="training loss (mean over seeds)", xlabel="optimizer step")
    axes[0].legend(fontsize=8)
    plot_seed_bands(results_by_arm, key="loss", ax=axes[1], title="validation loss (mean, min-max)")
    plot_seed_bands(results_by_arm, key="metric", ax=axes[2], title=f"validation {metric} (mean, min-max)")
    fig.tight_layout()
    return fig


__all__ = ["plot_rate_grid", "plot_batch_costs", "plot_arms_costs", "plot_weight_decay"]
