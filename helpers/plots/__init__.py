"""Every plot of the workshop (matplotlib), one module per lesson topic; all names also here (``hp.plots.plot_run``).

Presentation layer: draws what the layers below computed, computes nothing of its own.

- :mod:`~helpers.plots.common`: min-max bars, smoothing, epoch lines, mean curves with seed bands;
- :mod:`~helpers.plots.schedules`: one run, rate curves, schedules compared, the range test (notebooks 00, 01);
- :mod:`~helpers.plots.freezing`: quality against speed, weight movement, rates per layer (notebook 02);
- :mod:`~helpers.plots.batching`: the batch x rate grid, costs per batch, weight decay (notebook 03);
- :mod:`~helpers.plots.stopping`: validation curves, stopping rules, seeds (notebook 04);
- :mod:`~helpers.plots.losses`: the loss x task matrix, an in-batch similarity view (notebook 05);
- :mod:`~helpers.plots.search`: an Optuna study and the transfer check (notebooks 06, 07);
- :mod:`~helpers.plots.recipe`: the data profile and the final scores (notebook 07);
- :mod:`~helpers.plots.reference`: a reference experiment's arms over the rates tried (notebooks 01-05),
  the recipe's bar and one epoch against four (notebook 07).

``hp.curve_plots`` and ``hp.batch_plots``, the names notebooks 03-05 use, are this package.
"""
from __future__ import annotations

from .batching import SCALING_RULE_STYLES, plot_arms_costs, plot_batch_costs, plot_rate_grid, plot_weight_decay
from .common import epoch_lines, min_max_bars, plot_seed_bands, smooth
from .freezing import plot_layer_rates, plot_quality_vs_speed, plot_weight_movement
from .losses import plot_cross_matrix, plot_inbatch
from .recipe import plot_profile, plot_scores
from .reference import plot_epoch_transfer, plot_rate_isolation, plot_recipe_bar
from .schedules import plot_arms, plot_before_after, plot_lr_curves, plot_range_test, plot_run
from .search import (plot_history, plot_importances, plot_intermediate, plot_slices, plot_subset_transfer,
                     plot_transfer)
from .stopping import (STOP_RULE_COLORS, STOP_RULE_STYLES, plot_loss_vs_metric, plot_replays, plot_rule_tradeoff,
                       plot_seed_curves, plot_validation)

__all__ = [
    "SCALING_RULE_STYLES", "STOP_RULE_COLORS", "STOP_RULE_STYLES", "epoch_lines", "min_max_bars", "smooth",
    "plot_seed_bands", "plot_run", "plot_lr_curves", "plot_before_after", "plot_arms", "plot_range_test",
    "plot_quality_vs_speed", "plot_weight_movement", "plot_layer_rates", "plot_rate_grid", "plot_batch_costs",
    "plot_arms_costs", "plot_weight_decay", "plot_validation", "plot_replays", "plot_loss_vs_metric",
    "plot_rule_tradeoff", "plot_seed_curves", "plot_cross_matrix", "plot_inbatch", "plot_history",
    "plot_intermediate", "plot_importances", "plot_slices", "plot_transfer", "plot_subset_transfer", "plot_profile", "plot_scores",
    "plot_rate_isolation", "plot_recipe_bar", "plot_epoch_transfer",
]
