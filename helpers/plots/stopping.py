"""Plots for validation curves, stopping rules and seeds (notebook 04)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .common import epoch_lines, min_max_bars, smooth


STOP_RULE_STYLES = ["--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1)), (0, (1, 1))]  # one per stopping rule
STOP_RULE_COLORS = ["tab:purple", "tab:brown", "tab:blue", "tab:orange", "tab:pink", "tab:olive", "tab:cyan"]


def plot_validation(result, title: str | None = None, ax=None, test: bool = True):
    """Training loss, validation loss (left axis) and validation metric (right axis) of one run, on one plot
    (notebook 04).

    The test curve (``result.test_curve``) is drawn too when present; the best
    validation evaluation is ringed; dotted lines mark the epochs.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 4))
    steps = [p["step"] for p in result.train_loss]
    losses = [p["loss"] for p in result.train_loss]
    ax.plot(steps, losses, color="tab:blue", alpha=0.25, lw=1)
    k = max(2, len(losses) // 15)
    sm = smooth(losses, k)
    ax.plot(steps[len(steps) - len(sm):], sm, color="tab:blue", label="training loss (smoothed)")
    ev = [e for e in result.evals if e.get("loss") is not None]
    ax.plot([e["step"] for e in ev], [e["loss"] for e in ev], color="tab:orange", marker="o", ms=3,
            label="validation loss")
    ax.set(xlabel="optimizer step", ylabel="loss")
    epoch_lines(ax, result)
    ax2 = ax.twinx()
    ev = [e for e in result.evals if e.get("metric") is not None]
    ax2.plot([e["step"] for e in ev], [e["metric"] for e in ev], color="tab:green", marker="s", ms=3,
             label=f"validation {result.metric}")
    best = max(ev, key=lambda e: e["metric"])
    ax2.scatter([best["step"]], [best["metric"]], s=120, facecolors="none", edgecolors="black", zorder=5,
                label=f"best validation (step {best['step']})")
    tc = getattr(result, "test_curve", None)
    if test and tc:
        st = sorted(tc)
        ax2.plot(st, [tc[s] for s in st], color="tab:red", ls="--", lw=1, label=f"test {result.metric}")
    ax2.set_ylabel(result.metric)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="best")
    ax.set_title(title or "training and validation curves")
    return ax, ax2


def plot_replays(evals, replays, metric: str = "Spearman", ax=None, title: str | None = None, test=None):
    """The validation metric with a vertical line where each rule stops and a marker on the checkpoint it keeps
    (notebook 04)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 3.8))
    ev = [e for e in evals if e.get("metric") is not None]
    ax.plot([e["step"] for e in ev], [e["metric"] for e in ev], color="tab:green", marker="o", ms=3,
            label=f"validation {metric}")
    if test:
        st = sorted(test)
        ax.plot(st, [test[s] for s in st], color="tab:red", ls="--", lw=1, alpha=0.7, label=f"test {metric}")
    dev = {e["step"]: e["metric"] for e in ev}
    for i, rp in enumerate(replays):
        c = STOP_RULE_COLORS[i % len(STOP_RULE_COLORS)]
        label = f"{rp.rule}" + ("" if rp.signal == "metric" else f" on {rp.signal}")
        label += f": stops at {rp.stop_step}" if rp.fired else ": never fires"
        ax.axvline(rp.stop_step, color=c, ls=STOP_RULE_STYLES[i % len(STOP_RULE_STYLES)], lw=1.5, label=label)
        if rp.kept_step in dev:
            ax.scatter([rp.kept_step], [dev[rp.kept_step]], color=c, s=60, zorder=5, marker="D")
    ax.set(xlabel="optimizer step", ylabel=metric, title=title or "where each rule stops (diamonds: kept checkpoint)")
    ax.legend(fontsize=7, loc="best")
    return ax


def plot_loss_vs_metric(result, replays=(), ax=None):
    """Validation loss and metric side by side, each with its best evaluation and the rules replayed on it
    (notebook 04)."""
    if ax is None:
        _, ax = plt.subplots(1, 2, figsize=(12, 3.6))
    for a, signal, color in ((ax[0], "loss", "tab:orange"), (ax[1], "metric", "tab:green")):
        ev = [e for e in result.evals if e.get(signal) is not None]
        a.plot([e["step"] for e in ev], [e[signal] for e in ev], marker="o", ms=3, color=color)
        best = (min if signal == "loss" else max)(ev, key=lambda e: e[signal])
        a.scatter([best["step"]], [best[signal]], s=120, facecolors="none", edgecolors="black", zorder=5,
                  label=f"best at step {best['step']}")
        for i, rp in enumerate(r for r in replays if r.signal == signal):
            a.axvline(rp.stop_step, color="black", ls=STOP_RULE_STYLES[i % len(STOP_RULE_STYLES)], lw=1,
                      label=f"{rp.rule} stops at {rp.stop_step}" if rp.fired else f"{rp.rule} never fires")
        name = "validation loss" if signal == "loss" else f"validation {result.metric}"
        a.set(title=name, xlabel="optimizer step")
        a.legend(fontsize=8)
    plt.tight_layout()
    return ax


def plot_rule_tradeoff(rows_by_rule: dict[str, list[dict]], ax=None, title: str | None = None):
    """Each rule as a point: compute used (x) against the test score it kept (y), mean and min-max over seeds
    (notebook 04)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 4.2))
    placed: dict[tuple, int] = {}
    for name, rows in rows_by_rule.items():
        x = np.array([r["compute"] for r in rows], dtype=float)
        y = np.array([r["test"] for r in rows], dtype=float)
        ax.errorbar(x.mean(), y.mean(), xerr=min_max_bars(x), yerr=min_max_bars(y), fmt="o", capsize=3)
        spot = (round(float(x.mean()), 2), round(float(y.mean()), 3))  # stack labels of points that coincide
        k = placed[spot] = placed.get(spot, -1) + 1
        ax.annotate(name.replace(" on metric", ""), (x.mean(), y.mean()), textcoords="offset points",
                    xytext=(6, 4 - 10 * k), fontsize=8)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.set(xlabel="share of the full run's steps trained", ylabel="test score of the kept checkpoint",
           title=title or "stopping rules: compute against the score kept (mean, min-max over seeds)")
    ax.grid(alpha=0.3)
    return ax


def plot_seed_curves(results, cut_step: int | None = None, ax=None, title: str | None = None):
    """Each seed's validation curve; a vertical line where unpromising seeds would be stopped (notebook 04)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.8))
    for r in results:
        ev = [e for e in r.evals if e.get("metric") is not None]
        ax.plot([e["step"] for e in ev], [e["metric"] for e in ev], marker="o", ms=2.5,
                label=f"seed {r.config.get('seed')}: test at the end {r.test_metric:.4f}")
    if cut_step is not None:
        ax.axvline(cut_step, color="black", ls="--", lw=1, label=f"decide here (step {cut_step})")
    metric = results[0].metric if results else "metric"
    ax.set(xlabel="optimizer step", ylabel=f"validation {metric}", title=title or "the same run, different seeds")
    ax.legend(fontsize=8)
    return ax


__all__ = ["plot_validation", "plot_replays", "plot_loss_vs_metric", "plot_rule_tradeoff", "plot_seed_curves"]
