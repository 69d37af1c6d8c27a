"""The workshop's widgets (ipywidgets), one module per lesson topic; all names also here (``hp.widgets.LayerPicker``).

Presentation layer. Each widget draws with matplotlib into an ``ipywidgets.Image``
and can be driven without a browser (tests) as well as in JupyterLab (tests/browser).

- :mod:`~helpers.widgets.common`: PNG rendering and stable CSS classes;
- :mod:`~helpers.widgets.schedules`: :class:`ScheduleExplorer` (notebook 01);
- :mod:`~helpers.widgets.dashboard`: :class:`TrainingDashboard` (notebooks 01-04);
- :mod:`~helpers.widgets.freezing`: :class:`LayerPicker` (notebook 02);
- :mod:`~helpers.widgets.batching`: :class:`BatchCalculator` (notebook 03).

``hp.batch_widgets``, the name notebook 03 uses, is this package.
"""
from __future__ import annotations

from .batching import RULE_LABELS, BatchCalculator
from .common import css_hooks, figure_png
from .dashboard import TrainingDashboard, dashboard_figure
from .freezing import LayerPicker, picker_state
from .schedules import ScheduleExplorer, explorer_state

__all__ = ["figure_png", "css_hooks", "explorer_state", "ScheduleExplorer", "TrainingDashboard", "dashboard_figure",
           "picker_state", "LayerPicker", "RULE_LABELS", "BatchCalculator"]
