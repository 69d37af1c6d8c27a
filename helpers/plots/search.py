"""Plots of an Optuna study (notebooks 06 and 07): history, intermediate values, importances, slices, transfer.

Optuna draws the first four itself (``optuna.visualization.matplotlib``); the workshop sizes them.
"""
from __future__ import annotations

import warnings

from ..tuning import subset_score



def _quiet_optuna_plot(fn, *args, **kwargs):
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # a parameter every trial sampled at one value (a categorical with one choice so far): the panel is
        # drawn around that value; matplotlib's note about it would print the site-packages path
        warnings.filterwarnings("ignore", message="Attempting to set identical", category=UserWarning)
        return fn(*args, **kwargs)


def plot_history(study):
    """Optuna's optimization history (matplotlib): every trial's score and the best so far (notebooks 06 and 07)."""
    from optuna.visualization import matplotlib as ovm

    ax = _quiet_optuna_plot(ovm.plot_optimization_history, study)
    ax.figure.set_size_inches(8, 3.6)
    return ax


def plot_intermediate(study):
    """Optuna's intermediate values: each trial's validation score per evaluation; pruned lines stop early
    (notebook 06)."""
    from optuna.visualization import matplotlib as ovm

    ax = _quiet_optuna_plot(ovm.plot_intermediate_values, study)
    ax.figure.set_size_inches(8, 3.6)
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    return ax


def plot_importances(study):
    """Optuna's parameter importances (fANOVA on completed trials); a note instead when fewer than 2 completed
    (notebook 06)."""
    import matplotlib.pyplot as plt
    import optuna
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ovm

    def note(text):
        _, ax = plt.subplots(figsize=(6, 1.2))
        ax.axis("off")
        ax.text(0, 0.5, text)
        return ax

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return note(f"Importances need at least 2 completed trials; this study has {len(complete)}.")
    if len({t.value for t in complete}) < 2:
        return note("Every completed trial scored the same: no parameter explains any difference.")
    # fANOVA (a seeded random forest) rather than Optuna 5's default PED-ANOVA, which needs many more
    # completed trials than a laptop study has to tell its top quantile from the rest
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        ax = _quiet_optuna_plot(ovm.plot_param_importances, study, evaluator=evaluator)
    except RuntimeError as exc:  # e.g. "zero total variance in all trees"
        plt.close("all")
        return note(f"Importances could not be computed: {exc}")
    ax.figure.set_size_inches(7, 3.4)
    return ax


def plot_slices(study, params=None):
    """Optuna's slice plot: score against each parameter, one panel per parameter (notebook 06)."""
    from optuna.visualization import matplotlib as ovm

    axes = _quiet_optuna_plot(ovm.plot_slice, study, params=params)
    first = axes.flat[0] if hasattr(axes, "flat") else axes
    first.figure.set_size_inches(15, 3.4)
    return axes


def plot_transfer(trials, results: dict, key: str = "test", ax=None):
    """Subset score (x) against the larger run's score (y), one point per re-run trial; pruned trials hollow
    (notebook 06)."""
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for t in trials:
        x, y = subset_score(t), results[t.number].summary()[key]
        pruned = t.state == TrialState.PRUNED
        ax.scatter([x], [y], s=60, facecolors="none" if pruned else "tab:blue", edgecolors="tab:blue")
        ax.annotate(f"#{t.number}", (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    metric = next(iter(results.values())).metric if results else "score"
    ax.set(xlabel=f"subset validation {metric} (hollow: pruned, last evaluation)",
           ylabel=f"{key} {metric} after training on more data", title="does the subset ranking transfer?")
    ax.grid(alpha=0.3)
    return ax


def plot_subset_transfer(table, ax=None):
    """The reference subset transfer (:func:`helpers.transfer.subset_transfer_table`): each configuration's dev
    Spearman after training on the subset (x) against its test Spearman on all the data (y), coloured by the
    experiment it comes from (notebook 06)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.2))
    if len(table) == 0:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no subset runs stored yet", ha="center", va="center")
        return ax
    groups = table["configuration"].str.split(":").str[0]
    for g in dict.fromkeys(groups):
        part = table[groups == g]
        ax.scatter(part["subset dev"], part["full test"], s=30, label=g)
    rho = table.attrs.get("rho vs full test")
    ax.set(xlabel="dev Spearman after training on the subset", ylabel="test Spearman after training on all pairs",
           title=f"{len(table)} configurations" + (f": rank correlation {rho:.2f}" if rho is not None else ""))
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return ax


__all__ = ["plot_history", "plot_intermediate", "plot_importances", "plot_slices", "plot_transfer",
           "plot_subset_transfer"]
