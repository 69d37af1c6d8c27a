"""Notebook 06's namespace for the search: study (:mod:`helpers.tuning`), trials (:mod:`helpers.workers`), transfer, plots.

Presentation layer: it defines nothing; ``hp.search.run_search`` is
:func:`helpers.tuning.run_search` and ``hp.search.plot_history`` is
:func:`helpers.plots.search.plot_history` (plots of :mod:`helpers.plots.search`), so a lesson reads one name for its
topic while the study itself stays below the plots.
"""
from __future__ import annotations

from .plots.search import (plot_history, plot_importances, plot_intermediate, plot_slices, plot_subset_transfer,
                           plot_transfer)
from .tuning import *  # noqa: F401,F403  (every public name of the study: SPACE, Objective, run_search, ...)
from .transfer import *  # noqa: F401,F403  (transfer_check, rank_correlation, cost_comparison, ...)
from .transfer import __all__ as _transfer_names
from .tuning import __all__ as _study_names
from .workers import SearchReport, fail_dead_trials, run_search

__all__ = [*_study_names, *_transfer_names, "SearchReport", "fail_dead_trials", "run_search", "plot_history", "plot_intermediate", "plot_importances", "plot_slices", "plot_transfer", "plot_subset_transfer"]
