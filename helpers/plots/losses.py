"""Plots for losses and tasks (notebook 05): the loss x task matrix and one in-batch similarity view."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np



def plot_cross_matrix(delta, ax=None, title: str = "change from the untuned model, per training arm and task",
                      own: dict[str, str] | None = None, labels: dict[str, str] | None = None):
    """Heat map of score changes (rows: what was trained, columns: the task scored); own-task cells are boxed
    (notebook 05).

    ``labels`` renames the columns on the plot (e.g. ``helpers.crosseval.TASK_LABELS``).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(2.4 + 2.8 * delta.shape[1], 0.9 + 0.55 * delta.shape[0]))
    vals = delta.values.astype(float)
    lim = max(float(np.nanmax(np.abs(vals))), 1e-3)
    im = ax.imshow(vals, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(delta.shape[1]), [(labels or {}).get(c, str(c)) for c in delta.columns])
    ax.set_yticks(range(delta.shape[0]), [str(i) for i in delta.index])
    for i in range(vals.shape[0]):
        for j in range(vals.shape[1]):
            ax.text(j, i, f"{vals[i, j]:+.4f}", ha="center", va="center", fontsize=9,
                    color="white" if abs(vals[i, j]) > lim * 0.6 else "black")
            if own and own.get(delta.index[i]) == delta.columns[j]:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2.2, ec="black"))
    plt.colorbar(im, ax=ax, label="score - untuned score")
    ax.set_title(title)
    return ax


def plot_inbatch(view, row: int = 0, ax=None, max_chars: int = 38):
    """For one anchor of the batch: the softmax over its in-batch candidates at each scale (bars per scale)
    (notebook 05)."""
    scales = list(view["scales"])
    cands = list(view["texts"]["positive"]) + list(view["texts"].get("negative", []))
    n = view["n"]
    if ax is None:
        _, ax = plt.subplots(figsize=(11, 0.9 + 0.32 * len(cands)))
    y = np.arange(len(cands))
    h = 0.8 / len(scales)
    for k, s in enumerate(scales):
        ax.barh(y + k * h, view["scales"][s]["probs"][row], h, label=f"scale {s:g} (temperature {1 / s:g})")
    labels = []
    for j, t in enumerate(cands):
        kind = "POSITIVE" if j == row else ("hard neg. (own)" if j == n + row else ("hard neg." if j >= n else "in-batch"))
        t = t if len(t) <= max_chars else t[: max_chars - 1] + "…"
        labels.append(f"{kind}: {t}  cos {view['sims'][row, j]:.2f}")
    ax.set_yticks(y + h * (len(scales) - 1) / 2, labels, fontsize=7)
    ax.invert_yaxis()
    anchor = view["texts"]["anchor"][row]
    ax.set(xlabel="softmax probability", title=f"anchor: {anchor[:80]}")
    ax.legend(fontsize=7, loc="lower right")
    return ax


__all__ = ["plot_cross_matrix", "plot_inbatch"]
