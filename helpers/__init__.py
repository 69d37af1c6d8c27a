"""Helpers for the Sentence Transformers fine-tuning hyperparameter workshop.

One namespace for the notebooks (``import helpers as hp``):

* configuration: :func:`setup`, :func:`get_scale`, :func:`pick_device`, :func:`seed_everything`
* data: :func:`load_stsb`, :func:`load_snli_triplets`, :func:`load_snli_retrieval`,
  :func:`load_codesearch`, :func:`load_pairs_file`, :func:`load_task`
* model: :func:`load_model`, :func:`describe_layers`, :func:`layer_table`
* training: :class:`TrainConfig`, :func:`train`, :class:`TrainResult`
* schedules, freezing, batching, losses, evaluation, plots: submodules of the same names.
"""
from __future__ import annotations

import os as _os

_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from .config import SCALES, Scale, environment_report, get_scale, pick_device, seed_everything, setup  # noqa: E402
from .data import (  # noqa: E402
    DataError,
    load_pairs_file,
    load_snli_retrieval,
    load_snli_triplets,
    load_stsb,
)
from .codesearch import load_codesearch  # noqa: E402
from .models import describe_layers, layer_table, load_model, n_layers  # noqa: E402
from .evaluation import ir_evaluator, score, sts_evaluator  # noqa: E402
from .schedules import SCHEDULES, lr_curve  # noqa: E402
from .tasks import Task, load_task  # noqa: E402
from .training import ConfigError, StopFlag, TrainConfig, TrainingOOMError, TrainResult, prepare_task, train  # noqa: E402
from . import experiments, plots, rangetest, schedules, verdicts, widgets  # noqa: E402
from .experiments import run_grid  # noqa: E402
from .rangetest import lr_range_test  # noqa: E402
from .freezing import WeightMovement  # noqa: E402
from . import freezing  # noqa: E402
from . import crosseval, curve_plots, inbatch, stopping  # noqa: E402  (notebooks 04 and 05)
from . import recipe, search  # noqa: E402  (notebooks 06 and 07, python -m helpers)
from . import accumulation, batch_plots, batch_widgets, batching, memory  # noqa: E402  (notebook 03)

__all__ = [
    "SCALES", "Scale", "environment_report", "get_scale", "pick_device", "seed_everything", "setup",
    "DataError", "load_pairs_file", "load_snli_retrieval", "load_snli_triplets", "load_stsb", "load_codesearch",
    "describe_layers", "layer_table", "load_model", "n_layers",
    "ir_evaluator", "score", "sts_evaluator", "SCHEDULES", "lr_curve", "Task", "load_task",
    "ConfigError", "StopFlag", "TrainingOOMError", "TrainConfig", "TrainResult", "prepare_task", "train", "plots",
    "experiments", "rangetest", "schedules", "verdicts", "widgets", "run_grid", "lr_range_test",
    "WeightMovement", "freezing",
]
__version__ = "0.1.0"
