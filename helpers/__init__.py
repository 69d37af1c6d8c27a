"""Helpers for the Sentence Transformers fine-tuning hyperparameter workshop (``import helpers as hp``).

The package reads top to bottom in five layers; a module imports only from its
own layer or the layers above it in this list (``tests/test_layers.py`` builds
the import graph and fails on any cycle and on any import that points up):

1. core: ``config``, ``data`` (with ``records``, the checks every loader shares), ``codesearch``, ``tasks``, ``models``,
   ``schedules``, ``losses``, ``evaluation``, ``measure`` (memory, step time),
   ``results`` (TrainResult, the one JSON writer, mean ± sd), ``devices`` (the GPU path),
   ``datafetch`` (``make data``), ``profiling`` (the recipe's data profile);
2. the runner and its knobs: ``settings`` (TrainConfig, validate),
   ``batching`` (rate rules, steps per epoch), ``freezing``, ``distributed``
   (torchrun primitives), ``callbacks``, ``training`` (:func:`train`);
3. experiments: ``experiments`` (:func:`run_grid`), ``verdicts``, ``stopping``,
   ``crosseval``, ``rangetest``, ``accumulation``, ``inbatch``, ``tuning``
   (the Optuna study), ``workers`` (running its trials: one process, local
   workers, torchrun), ``transfer`` (does the subset's ranking hold),
   ``claims``, ``refstore`` and ``reference`` (the syllabus's claims, the reference runs' plan and
   records, and the runs and verdicts that measure them), ``target`` (the recipe's bar: the tuned recipe
   against the common default and the library's example, from the stored records);
4. presentation: ``plots/`` and ``widgets/`` (one module per lesson topic), and
   ``search`` (notebook 06's one name for tuning, workers, transfer and plots.search);
5. applications: ``recipe`` (with ``recipe_report``: its report and whether tuning paid off), ``cli``
   (``python -m helpers``) and this facade.

Lessons and the modules they use (each notebook's first cell names them too):

- 00 quickstart: config, settings, training, results, evaluation, models, data, plots.schedules
- 01 learning-rate schedules: schedules, rangetest, experiments, verdicts, plots.schedules, widgets.schedules,
  widgets.dashboard
- 02 layer freezing: freezing, models, experiments, verdicts, plots.freezing, widgets.freezing, widgets.dashboard
- 03 batch size and scaling: batching, accumulation, measure, inbatch, codesearch, tasks, models, evaluation,
  experiments, verdicts, plots.batching, widgets.batching, widgets.dashboard
- 04 validation and early stopping: stopping, experiments, verdicts, plots.stopping, widgets.dashboard
- 05 losses for the task: losses, inbatch, crosseval, data, models, verdicts, plots.losses
- 06 search on a subset: search (tuning, workers, transfer, plots.search), verdicts
- 07 the full recipe: recipe, recipe_report, target, search, data, verdicts, plots.recipe, plots.schedules, cli

Every public function and class names its lesson in its docstring ("(notebook 03)"); plumbing names what uses
it (``make data``, ``python -m helpers``, ``tools/gpu_pack.py``); ``tests/test_layers.py`` checks both.

Everything loads lazily (a module-level ``__getattr__``): ``import helpers``
costs nothing, and ``python -m helpers --help`` imports neither ipywidgets,
matplotlib nor Optuna. ``hp.curve_plots`` and ``hp.batch_plots`` are
:mod:`helpers.plots`, ``hp.batch_widgets`` is :mod:`helpers.widgets` and
``hp.memory`` is :mod:`helpers.measure` (the names the notebooks were written with).
"""
from __future__ import annotations

import importlib as _importlib
import os as _os

_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# name -> the module that defines it
_NAMES = {
    "SCALES": "config", "Scale": "config", "environment_report": "config", "get_scale": "config",
    "pick_device": "config", "seed_everything": "config", "setup": "config",
    "DataError": "data", "load_pairs_file": "data", "load_snli_retrieval": "data", "load_snli_triplets": "data",
    "load_stsb": "data", "load_codesearch": "codesearch", "Task": "tasks", "load_task": "tasks",
    "describe_layers": "models", "layer_table": "models", "load_model": "models", "n_layers": "models",
    "ir_evaluator": "evaluation", "score": "evaluation", "sts_evaluator": "evaluation",
    "SCHEDULES": "schedules", "lr_curve": "schedules",
    "ConfigError": "settings", "TrainConfig": "settings", "TrainResult": "results", "StopFlag": "callbacks",
    "TrainingOOMError": "training", "prepare_task": "training", "train": "training",
    "WeightMovement": "freezing", "GridResult": "experiments", "run_grid": "experiments",
    "lr_range_test": "rangetest",
}
# the lesson modules the notebooks reach as hp.<name>
_SUBMODULES = (
    "accumulation", "batching", "callbacks", "cli", "codesearch", "config", "crosseval", "data", "distributed",
    "evaluation", "experiments", "freezing", "inbatch", "losses", "measure", "models", "plots", "rangetest",
    "recipe", "results", "schedules", "search", "settings", "stopping", "tasks", "training", "transfer", "tuning",
    "verdicts", "widgets", "workers", "claims", "refstore", "reference", "target", "devices", "datafetch", "records",
    "recipe_report", "profiling",
)
_ALIASES = {"curve_plots": "plots", "batch_plots": "plots", "batch_widgets": "widgets", "memory": "measure"}

__all__ = [*_NAMES, *_SUBMODULES, *_ALIASES]
__version__ = "0.1.0"


def __getattr__(name: str):
    """Load ``hp.<name>`` on first use: a name from its module, a submodule, or an old name of a submodule."""
    if name in _NAMES:
        value = getattr(_importlib.import_module(f".{_NAMES[name]}", __name__), name)
    elif name in _SUBMODULES or name in _ALIASES:
        value = _importlib.import_module(f".{_ALIASES.get(name, name)}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
