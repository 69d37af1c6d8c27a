"""Plots of the whole recipe (notebook 07): the data profile and the final scores."""
from __future__ import annotations

from ..tasks import Task, texts



def plot_profile(task: Task, tokenizer, max_seq_length: int = 128):
    """Histograms of the training scores (pairs) and of tokens per text, the truncation limit marked (notebook 07)."""
    import matplotlib.pyplot as plt

    has_score = "score" in task.train.column_names
    fig, axes = plt.subplots(1, 2 if has_score else 1, figsize=(11 if has_score else 6, 3.2), squeeze=False)
    axes = axes[0]
    lengths = [len(ids) for ids in tokenizer(texts(task.train))["input_ids"]]
    axes[-1].hist(lengths, bins=40, color="#3b75af")
    axes[-1].axvline(max_seq_length, color="black", ls="--", label=f"max_seq_length {max_seq_length}")
    axes[-1].set(title="tokens per training text", xlabel="tokens")
    axes[-1].legend(fontsize=8)
    if has_score:
        axes[0].hist(task.train["score"], bins=20, color="#999999")
        axes[0].set(title="training scores (rescaled to 0-1)", xlabel="score")
    fig.tight_layout()
    return axes


def plot_scores(scores: dict[str, float], metric: str, ax=None):
    """One bar per model (untuned, common default, tuned recipe...), the score written on each (notebook 07)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(1.8 + 1.6 * len(scores), 3.2))
    colors = ["#999999", "#d9a441", "#3b75af", "#5aa469"]
    bars = ax.bar(list(scores), list(scores.values()), color=colors[: len(scores)])
    for b, v in zip(bars, scores.values()):
        ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.4f}", ha="center", va="bottom")
    lo, hi = min(scores.values()), max(scores.values())
    ax.set_ylim(max(0, lo - 0.1), min(1, hi + 0.05))
    ax.set(title=f"test {metric}")
    return ax


__all__ = ["plot_profile", "plot_scores"]
