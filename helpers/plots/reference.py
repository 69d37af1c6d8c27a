"""The isolation plot of a reference experiment: each arm's score at every rate tried, its best rate marked
(notebooks 01, 02, 03 and 05, "Reference verdicts").

When a claim is about a schedule, freezing, a batch or a loss, the learning rate is a nuisance: each arm is
compared at its own best rate (chosen on dev, scored on test). This plot shows what that choice rests on.
"""
from __future__ import annotations

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
