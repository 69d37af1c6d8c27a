"""The isolation plot of a reference experiment: each arm's score at every rate tried, its best rate marked
(notebooks 01, 02, 03 and 05, "Reference verdicts").

When a claim is about a schedule, freezing, a batch or a loss, the learning rate is a nuisance: each arm is
compared at its own best rate (chosen on dev, scored on test). This plot shows what that choice rests on.
"""
from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt

SIZE = (11, 3.8)  # fixed, whatever the data: nbval compares the figure's size and panel count


def plot_rate_isolation(table, axes=None):
    """Two panels (dev, test): mean score over seeds against the peak rate, one line per arm, min-max over
    seeds as bars, each arm's best dev rate as a star, the untuned model dashed.

    ``table``: :func:`helpers.reference.rate_table`. Notebooks 01, 02, 03 and 05 ("Reference verdicts").
    """
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=SIZE)
    untuned = table.attrs.get("untuned") or {}
    metric = table.attrs.get("metric", "score")
    for ax, split in zip(axes, ("dev", "test")):
        if table.empty:
            ax.text(0.5, 0.5, "no runs stored yet:\nmake reference", ha="center", va="center", transform=ax.transAxes)
            ax.set(title=split, xticks=[], yticks=[])
            continue
        for k, (arm, rows) in enumerate(table.groupby("arm", sort=False)):
            color = f"C{k}"
            rows = rows.sort_values("rate")
            ax.plot(rows["rate"], rows[split], marker="o", color=color, label=arm)
            for _, r in rows.iterrows():
                yerr = [[max(0.0, r[split] - r[f"{split} min"])], [max(0.0, r[f"{split} max"] - r[split])]]
                ax.errorbar([r["rate"]], [r[split]], yerr=yerr, color=color, capsize=3, lw=1)
            best = rows[rows["best on dev"]]
            ax.scatter(best["rate"], best[split], marker="*", s=220, color=color, edgecolors="black", zorder=3)
        if split in untuned:
            ax.axhline(untuned[split], color="grey", ls="--", lw=1, label="untuned")
        ax.set_xscale("log")
        rates = sorted(table["rate"].unique())
        ax.set_xticks(rates, [f"{r:.0e}".replace("e-0", "e-") for r in rates])
        ax.minorticks_off()
        lo, hi = table["seeds"].min(), table["seeds"].max()
        seeds = f"{lo}" if lo == hi else f"{lo}-{hi}"
        ax.set(xlabel="peak learning rate", ylabel=f"{split} {metric}",
               title=f"{split}: mean and min-max over {seeds} seeds; star = best on dev", )
        ax.title.set_fontsize(9)
    if not table.empty:
        axes[0].legend(fontsize=8)
    axes[0].figure.suptitle(f"reference, {table.attrs.get('experiment', '')}: {table.attrs.get('question', '')}",
                            fontsize=10)
    axes[0].figure.tight_layout()
    return axes


def plot_recipe_bar(runs: dict[str, list[dict]], curves: dict, untuned: dict | None = None, target: float = 0.870,
                    axes=None):
    """Notebook 07's bar, in two panels: the validation score at every evaluation (mean over seeds, one line per
    arm, min-max shaded), and each seed's test score per arm (dots, the mean as a bar) against the target line.

    ``runs``: :func:`helpers.target.bar_runs`; ``curves``: :func:`helpers.target.dev_curves`.
    """
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=SIZE)
    left, right = axes
    untuned = untuned or {}
    for k, (arm, table) in enumerate(curves.items()):
        left.plot(table.index, table.mean(axis=1), marker="o", color=f"C{k}", label=f"{arm} ({table.shape[1]} seeds)")
        left.fill_between(table.index, table.min(axis=1), table.max(axis=1), color=f"C{k}", alpha=0.15)
    if "dev" in untuned:
        left.axhline(untuned["dev"], color="grey", ls="--", lw=1, label="untuned")
    left.set(xlabel="epoch", ylabel="dev Spearman", title="validation score during training (mean, min-max)")
    for k, (arm, rs) in enumerate(runs.items()):
        ys = [r["test"] for r in rs]
        right.scatter([k] * len(ys), ys, color=f"C{k}", s=22, zorder=3)
        if ys:
            right.hlines(sum(ys) / len(ys), k - 0.3, k + 0.3, color=f"C{k}", lw=2)
    right.axhline(target, color="black", ls=":", lw=1, label=f"target {target}")
    if "test" in untuned:
        right.axhline(untuned["test"], color="grey", ls="--", lw=1, label="untuned")
    right.set_xticks(range(len(runs)), [textwrap.fill(arm, 15) for arm in runs], fontsize=8)
    right.set(ylabel="test Spearman", title="test score per seed (bar: mean)")
    for ax in axes:
        ax.title.set_fontsize(9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
    axes[0].figure.suptitle("the recipe's bar: 4 epochs on all of STS-B", fontsize=10)
    axes[0].figure.tight_layout()
    return axes


def plot_epoch_transfer(table, axes=None):
    """Notebook 07's fidelity question, in two panels: each setting's one-epoch dev score (what a one-epoch search
    picks on) against its four-epoch test score (what the bar measures), and each setting's test score after one
    epoch and after four, one line per setting (lines that cross are rankings that change).

    ``table``: :func:`helpers.target.epoch_table`.
    """
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=SIZE)
    left, right = axes
    for k, (name, row) in enumerate(table.iterrows()):
        color = f"C{k % 10}"
        left.scatter(row["1 epoch dev"], row["4 epochs test"], color=color, s=24, zorder=3)
        left.annotate(name, (row["1 epoch dev"], row["4 epochs test"]), fontsize=6, xytext=(3, 2),
                      textcoords="offset points")
        right.plot([1, 4], [row["1 epoch test"], row["4 epochs test"]], marker="o", color=color, label=name)
    rho = table.attrs.get("rho")
    left.set(xlabel="dev Spearman after 1 epoch (what the search sees)", ylabel="test Spearman after 4 epochs",
             title="one-epoch dev against four-epoch test" + (f" (rank correlation {rho:.2f})" if rho is not None
                                                              else ""))
    right.set_xticks([1, 4], ["1 epoch", "4 epochs"])
    right.set(ylabel="test Spearman", title="test score after 1 and 4 epochs, one line per setting")
    for ax in axes:
        ax.title.set_fontsize(9)
    if len(table):
        right.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    axes[0].figure.suptitle("does a one-epoch search rank settings as four epochs do? (seed 0)", fontsize=10)
    axes[0].figure.tight_layout()
    return axes
