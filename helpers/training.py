"""The training runner: one configuration, one call, a result with everything measured.

Every notebook trains through :func:`train`. It runs the library's
``SentenceTransformerTrainer`` (its arguments, losses, evaluators, callbacks,
``learning_rate_mapping`` and ``EarlyStoppingCallback``); the workshop only
adds what the libraries lack: rate scaling for the batch size, gradual
unfreezing at the right moment, one scheduler factory shared with the plots,
and a recorder that keeps the rate at every optimizer step, the training
loss, and the validation loss and metric at every evaluation.

Nothing is left on disk unless ``output_dir`` is set (checkpoints for
early stopping live in a temporary folder that is removed; on CUDA the best
weights stay in memory, :mod:`helpers.devices`), and the same seed on the same
machine gives the same numbers.
"""
from __future__ import annotations

import contextlib
import difflib
import gc
import json
import math
import os
import shutil
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from transformers import EarlyStoppingCallback, TrainerCallback

from .batching import SCALING_RULES, effective_batch, scaled_learning_rate
from .config import PRECISIONS, get_scale, mixed_precision, pick_device, pick_precision, seed_everything
from .freezing import (GradualUnfreezing, check_part_names, freeze_bottom, freeze_parts, layerwise_lr_mapping,
                       part_rates, rates_lr_mapping, shaping_trainable)
from .losses import LOSSES, check_loss_fits, default_loss, is_inbatch, make_loss
from .memory import PeakMemory
from .models import count_parameters, load_model, n_layers
from .schedules import SCHEDULES, build_scheduler, warmup_steps
from .data import SubsetTooLarge
from .devices import (BestWeights, best_weights_place, check_one_gpu, check_trainer_batch, drop_nonfinite_grads,
                      loader_settings, logging_steps, sync_free_guard)
from .tasks import load_task

ALL = "all"


class ConfigError(ValueError):
    """A setting that cannot work, raised before any training starts."""

    def __init__(self, setting: str, value, allowed: str, suggestion: str = ""):
        self.setting, self.value, self.allowed, self.suggestion = setting, value, allowed, suggestion
        msg = f"{setting}={value!r} is not allowed: {allowed}."
        if suggestion:
            msg += f" {suggestion}"
        super().__init__(msg)


class TrainingOOMError(RuntimeError):
    """Training ran out of accelerator memory; the message lists settings that need less.

    Raised by :func:`train` after the memory of the failed run was released,
    so the next call in the same process (notebook kernel) starts clean.
    ``suggestions`` holds the ways out, one per item.
    """

    def __init__(self, message: str, suggestions: list[str], device: str = "cuda"):
        self.suggestions, self.device = suggestions, device
        super().__init__(message)


@dataclass
class TrainConfig:
    """Every knob the workshop teaches. ``None`` sizes, epochs and batch come from the workshop scale.

    Sizes accept an int, ``None`` (the scale's size) or ``"all"``.
    """

    task: str = "stsb"  # stsb | codesearch | snli | path to a .csv/.tsv/.jsonl file
    model: str | None = None  # None: the embedded all-MiniLM-L6-v2
    loss: str | None = None  # cosent | cosine | angle | mnrl | cached_mnrl; None: by the data's columns
    learning_rate: float = 2e-5  # peak rate (before batch scaling)
    schedule: str = "linear"  # constant | linear | cosine | cosine_floor | onecycle | wsd
    warmup_fraction: float = 0.1  # share of optimizer steps spent warming up
    floor: float | None = None  # lowest rate for cosine_floor and wsd
    decay_fraction: float = 0.2  # wsd: share of steps in the final decay
    epochs: float | None = None
    batch_size: int | None = None
    grad_accum: int = 1
    lr_scaling: str = "none"  # none | linear | sqrt: scale the rate with the effective batch
    base_batch_size: int = 16  # the batch at which learning_rate was chosen
    weight_decay: float = 0.01  # AdamW; bias and LayerNorm weights are excluded by the trainer
    freeze_layers: int = 0  # bottom transformer layers frozen for the whole run
    freeze_embeddings: bool | None = None  # None: frozen exactly when freeze_layers > 0
    gradual_unfreezing: bool = False  # top layer first, one more layer per epoch
    unfreeze_start_layers: int = 1
    layerwise_decay: float = 1.0  # rate x decay per layer going down (1.0: one rate for all)
    frozen_parts: tuple[str, ...] | None = None  # freeze exactly these parts: "embeddings", "layer 3", ...
    lower_layers_lr: float | None = None  # a fixed rate (e.g. 1e-5) for the lower layers and the embeddings
    lower_layers: int | None = None  # how many bottom layers get lower_layers_lr (None: the bottom half)
    evals_per_epoch: int | None = None
    eval_loss: bool = True  # also compute the validation loss at each evaluation (one more pass over the dev pairs)
    early_stopping_patience: int | None = None  # evaluations without improvement before stopping
    early_stopping_metric: str = "task"  # task (Spearman / nDCG@10) or loss (validation loss)
    seed: int = 0
    train_size: int | str | None = None
    dev_size: int | str | None = None
    test_size: int | str | None = None
    max_seq_length: int | None = None
    max_steps: int | None = None  # stop after this many optimizer steps (overrides epochs)
    scale: str | None = None  # smoke | workshop | full; None: $WORKSHOP_SCALE
    device: str | None = None
    precision: str | None = None  # fp32 | bf16 | fp16 | auto; None: $WORKSHOP_PRECISION, else auto (config.pick_precision)
    loss_scale: float | None = None  # in-batch / CoSENT scale (1 / temperature)
    mini_batch_size: int = 32  # cached_mnrl
    gather_across_devices: bool = True  # mnrl/cached_mnrl under torchrun: every process's examples are negatives
    eval_batch_size: int = 32  # fixed so validation losses compare across batch sizes
    score_range: tuple[float, float] = (0.0, 1.0)  # for a user's file of scored pairs
    output_dir: str | None = None  # save the final model here (atomically)
    final_test: bool = True  # score the test split at the end (the rate range test skips it)

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some settings changed (``cfg.replace(learning_rate=5e-5)``)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise TypeError(f"Unknown setting(s) {sorted(unknown)}; see TrainConfig for the names.")
        return replace(self, **changes)

    def resolved(self) -> "TrainConfig":
        """Fill the scale-dependent defaults (epochs, batch, sizes, sequence length, evals per epoch)."""
        s = get_scale(self.scale)
        retrieval = self.task in ("codesearch", "snli")

        def size(v, default):
            return None if v == ALL else (default if v is None else v)

        return replace(
            self,
            scale=s.name,
            epochs=s.epochs if self.epochs is None else self.epochs,
            batch_size=s.batch_size if self.batch_size is None else self.batch_size,
            evals_per_epoch=s.evals_per_epoch if self.evals_per_epoch is None else self.evals_per_epoch,
            max_seq_length=s.max_seq_length if self.max_seq_length is None else self.max_seq_length,
            train_size=size(self.train_size, s.retrieval_train_size if retrieval else s.train_size),
            dev_size=size(self.dev_size, s.retrieval_test_queries if retrieval else s.dev_size),
            test_size=size(self.test_size, s.retrieval_test_queries if retrieval else s.test_size),
        )


@dataclass
class TrainResult:
    """What one run measured. ``model`` is the trained model (best one when early stopping)."""

    config: dict
    metric: str  # name of the task metric, e.g. "Spearman"
    lr: list[float] = field(default_factory=list)  # top rate at every optimizer step
    group_lrs: list[list[float]] = field(default_factory=list)  # every param group's rate per step
    train_loss: list[dict] = field(default_factory=list)  # {step, epoch, loss}
    evals: list[dict] = field(default_factory=list)  # {step, epoch, loss, metric}
    layer_lrs: dict[str, float] = field(default_factory=dict)  # peak rate per part
    unfreeze_history: list[list[int]] = field(default_factory=list)  # trainable layers per epoch
    learning_rate: float = 0.0  # the peak rate used (after batch scaling)
    effective_batch: int = 0  # per-device batch x grad_accum x processes
    world_size: int = 1  # processes that trained together (torchrun / accelerate launch)
    steps: int = 0
    train_examples: int = 0
    trainable_params: int = 0
    total_params: int = 0
    wall_time: float = 0.0
    steps_per_sec: float = 0.0
    examples_per_sec: float = 0.0
    peak_memory_mb: float = 0.0
    memory_delta_mb: float = 0.0
    device: str = "cpu"
    precision: str = "fp32"  # what the trainer computed in (config.pick_precision)
    test_metric: float = float("nan")
    best_step: int | None = None
    stop_reason: str = "finished"  # finished | early stopping | diverged: ... | stopped | interrupted
    model: object = field(default=None, repr=False, compare=False)

    @property
    def dev_metric(self) -> float:
        """The last validation metric (the best one when early stopping restored it)."""
        vals = [e["metric"] for e in self.evals if e.get("metric") is not None]
        if self.best_step is not None:
            best = [e["metric"] for e in self.evals if e["step"] == self.best_step and e.get("metric") is not None]
            if best:
                return best[0]
        return vals[-1] if vals else float("nan")

    @property
    def dev_metric_start(self) -> float:
        """The validation metric before training (evaluated at step 0)."""
        vals = [e["metric"] for e in self.evals if e["step"] == 0 and e.get("metric") is not None]
        return vals[0] if vals else float("nan")

    def summary(self) -> dict:
        """The headline numbers as a flat dict (one row of a comparison table)."""
        return {
            "dev": self.dev_metric,
            "test": self.test_metric,
            "steps": self.steps,
            "trainable_params": self.trainable_params,
            "wall_s": self.wall_time,
            "steps_per_s": self.steps_per_sec,
            "peak_mb": self.peak_memory_mb,
            "stop": self.stop_reason,
        }

    def to_dict(self) -> dict:
        """Everything but the model, for JSON."""
        d = asdict(replace(self, model=None))
        d.pop("model")
        return d

    JSON_FORMAT = "workshop-train-result"

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write everything but the model to ``path`` as JSON, atomically (temp file + ``os.replace``).

        Never pickle: a results file is safe to open from anyone. NaN and
        infinities are written as Python's ``json`` writes them (``NaN``,
        ``Infinity``), which :meth:`load_json` reads back exactly.
        """
        payload = {"format": self.JSON_FORMAT, "version": 1, "result": self.to_dict()}
        return write_json_atomically(path, payload)

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> "TrainResult":
        """Read a result written by :meth:`save_json` (``model`` is ``None``)."""
        path = Path(path)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a saved training result ({exc}).") from None
        if not isinstance(payload, dict) or payload.get("format") != cls.JSON_FORMAT:
            raise ValueError(f"{path}: not a saved training result (no format {cls.JSON_FORMAT!r}).")
        data = payload.get("result")
        names = {f.name for f in fields(cls)} - {"model"}
        if not isinstance(data, dict) or "config" not in data or "metric" not in data:
            raise ValueError(f"{path}: the saved result lacks 'config' or 'metric'.")
        return cls(**{k: v for k, v in data.items() if k in names})


def write_json_atomically(path: str | os.PathLike, payload, default=None) -> Path:
    """Write ``payload`` as JSON to ``path`` via a temporary file and ``os.replace``: never half-written.

    Used by :meth:`TrainResult.save_json` and the recipe's ``summary.json`` (notebook 07, the CLI).
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(payload, indent=1, default=default or _json_default)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}-", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return out


def _json_default(obj):
    """JSON for the odd values a result can hold (numpy numbers, paths, sets)."""
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


# --------------------------------------------------------------------------- validation


def _did_you_mean(value, allowed) -> str:
    """``Did you mean 'cosine'?`` for a misspelt name, else the allowed names."""
    close = difflib.get_close_matches(str(value).lower(), list(allowed), n=1, cutoff=0.5)
    if close:
        return f"Did you mean {close[0]!r}?"
    return f"Pick one of {', '.join(repr(a) for a in allowed)}."


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate(cfg: TrainConfig, layers: int | None = None, columns=None, n_train: int | None = None) -> list[str]:
    """Check a resolved config before training; raise :class:`ConfigError`, return warnings.

    ``layers``, ``columns`` and ``n_train`` enable the checks that need the
    model and data. Every message names the setting, the value, the allowed
    range and a way out.
    """
    notes = []
    lr = cfg.learning_rate
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError("learning_rate", lr, "it must be a positive number",
                          "Fine-tuning usually uses 1e-5 to 1e-4, e.g. learning_rate=2e-5.")
    if lr > 1e-2:
        notes.append(f"learning_rate={lr:g} is far above the usual 1e-5 to 1e-4 for AdamW fine-tuning; "
                     "expect divergence. Try learning_rate=2e-5.")
    if cfg.schedule not in SCHEDULES:
        raise ConfigError("schedule", cfg.schedule, f"one of {', '.join(SCHEDULES)}", _did_you_mean(cfg.schedule, SCHEDULES))
    if cfg.precision is not None and cfg.precision not in PRECISIONS:
        raise ConfigError("precision", cfg.precision, f"one of {', '.join(PRECISIONS)}",
                          "auto picks bf16 on modern GPUs, fp16 on older ones, and fp32 on CPUs unless opted in.")
    wf = cfg.warmup_fraction
    if isinstance(wf, bool) or not isinstance(wf, (int, float)) or not 0 <= wf < 1:
        raise ConfigError("warmup_fraction", wf, "a fraction in [0, 1) of the optimizer steps",
                          "About 0.1 is usual (warmup_fraction=0.1); 0 means no warm-up.")
    if cfg.schedule == "cosine_floor" and cfg.floor is None:
        raise ConfigError("floor", None, "a rate below the peak for schedule='cosine_floor'",
                          f"For example floor={lr / 10:g} (a tenth of the peak).")
    if cfg.floor is not None and (not isinstance(cfg.floor, (int, float)) or not 0 <= cfg.floor < lr):
        raise ConfigError("floor", cfg.floor, f"in [0, learning_rate={lr:g}): the floor must be below the peak",
                          f"The floor is the lowest rate of the decay; try floor={lr / 10:g}.")
    if not isinstance(cfg.decay_fraction, (int, float)) or not 0 < cfg.decay_fraction <= 1:
        raise ConfigError("decay_fraction", cfg.decay_fraction, "a fraction in (0, 1]",
                          "The final decay of schedule='wsd' usually takes 0.1 to 0.2 of the steps.")
    hints = {
        "batch_size": "16 or 32 is usual on a laptop; smaller if memory runs out.",
        "grad_accum": "1 means no accumulation; use 2, 4... to reach a larger effective batch.",
        "base_batch_size": "The batch at which learning_rate was chosen, e.g. 16.",
        "eval_batch_size": "32 is the default; keep it fixed to compare validation losses.",
        "mini_batch_size": "cached_mnrl's chunk size, e.g. 32; smaller needs less memory.",
    }
    for name, hint in hints.items():
        v = getattr(cfg, name)
        if not _whole(v) or v < 1:
            raise ConfigError(name, v, "a whole number of at least 1", hint)
    # 0 evaluations is allowed (the rate range test trains without any), but not with early stopping
    if not _whole(cfg.evals_per_epoch) or cfg.evals_per_epoch < 0:
        raise ConfigError("evals_per_epoch", cfg.evals_per_epoch, "a whole number of at least 0 (0: no evaluation)",
                          "1 to 4 evaluations per epoch is usual.")
    if cfg.evals_per_epoch == 0 and cfg.early_stopping_patience is not None:
        raise ConfigError("evals_per_epoch", 0, "at least 1 with early stopping", "Early stopping needs evaluations.")
    if isinstance(cfg.epochs, bool) or not isinstance(cfg.epochs, (int, float)) or not math.isfinite(cfg.epochs) \
            or cfg.epochs <= 0:
        raise ConfigError("epochs", cfg.epochs, "a positive number (fractions such as 0.5 are allowed)",
                          "1 to 4 epochs is usual for fine-tuning.")
    if cfg.max_steps is not None and (not _whole(cfg.max_steps) or cfg.max_steps < 1):
        raise ConfigError("max_steps", cfg.max_steps, "None or a whole number of at least 1",
                          "Use None to train for `epochs`.")
    if cfg.lr_scaling not in SCALING_RULES:
        raise ConfigError("lr_scaling", cfg.lr_scaling, f"one of {', '.join(SCALING_RULES)}",
                          _did_you_mean(cfg.lr_scaling, SCALING_RULES))
    if isinstance(cfg.weight_decay, bool) or not isinstance(cfg.weight_decay, (int, float)) \
            or not 0 <= cfg.weight_decay < 1:
        raise ConfigError("weight_decay", cfg.weight_decay, "in [0, 1)", "AdamW fine-tuning usually uses 0.01.")
    if not isinstance(cfg.layerwise_decay, (int, float)) or not 0 < cfg.layerwise_decay <= 1:
        raise ConfigError("layerwise_decay", cfg.layerwise_decay, "in (0, 1]",
                          "1.0 means one rate for all layers; 0.8-0.95 is usual.")
    if cfg.early_stopping_patience is not None and (
        not _whole(cfg.early_stopping_patience) or cfg.early_stopping_patience < 1
    ):
        raise ConfigError("early_stopping_patience", cfg.early_stopping_patience,
                          "None (no early stopping) or a whole number of at least 1",
                          "The syllabus uses early_stopping_patience=3.")
    if cfg.early_stopping_metric not in ("task", "loss"):
        raise ConfigError("early_stopping_metric", cfg.early_stopping_metric, "'task' or 'loss'",
                          "'task' watches the validation Spearman / nDCG@10 (the usual choice).")
    if not isinstance(cfg.eval_loss, bool):
        raise ConfigError("eval_loss", cfg.eval_loss, "True or False",
                          "eval_loss=False skips the validation loss (faster); the task metric is still evaluated.")
    if cfg.early_stopping_metric == "loss" and not cfg.eval_loss:
        raise ConfigError("eval_loss", cfg.eval_loss, "True when early_stopping_metric='loss'",
                          "Stopping on the validation loss needs it computed: set eval_loss=True, "
                          "or early_stopping_metric='task'.")
    if not isinstance(cfg.gather_across_devices, bool):
        raise ConfigError("gather_across_devices", cfg.gather_across_devices, "True or False",
                          "True lets in-batch losses use every process's examples as negatives under torchrun.")
    if cfg.loss is not None and cfg.loss not in LOSSES:
        raise ConfigError("loss", cfg.loss, f"None (chosen by the data) or one of {', '.join(LOSSES)}",
                          _did_you_mean(cfg.loss, LOSSES))
    for name in ("train_size", "dev_size", "test_size"):
        v = getattr(cfg, name)
        if v is not None and (not _whole(v) or v < 1):
            raise ConfigError(name, v, "None (the scale's size), 'all' or a whole number of at least 1",
                              f"Use {name}='all' for the whole split.")
    if not _whole(cfg.freeze_layers) or cfg.freeze_layers < 0:
        raise ConfigError("freeze_layers", cfg.freeze_layers, "a whole number of at least 0",
                          "0 trains every layer; 2-4 of MiniLM's 6 freeze the bottom.")
    if cfg.gradual_unfreezing and cfg.freeze_layers:
        raise ConfigError("freeze_layers", cfg.freeze_layers, "0 when gradual_unfreezing=True",
                          "Gradual unfreezing decides what is frozen; use unfreeze_start_layers.")
    if not _whole(cfg.unfreeze_start_layers) or cfg.unfreeze_start_layers < 1:
        raise ConfigError("unfreeze_start_layers", cfg.unfreeze_start_layers, "a whole number of at least 1",
                          "1 starts with only the top layer trainable.")
    _validate_parts_and_rates(cfg, layers)
    if layers is not None:
        if cfg.freeze_layers > layers:
            raise ConfigError("freeze_layers", cfg.freeze_layers, f"0..{layers} (the model has {layers} layers)",
                              f"freeze_layers={layers - 1} trains only the top block.")
        if not 1 <= cfg.unfreeze_start_layers <= layers:
            raise ConfigError("unfreeze_start_layers", cfg.unfreeze_start_layers,
                              f"1..{layers} (the model has {layers} layers)", "1 starts with only the top layer.")
    if columns is not None:
        loss = cfg.loss or default_loss(columns)
        try:
            check_loss_fits(loss, columns)
        except ValueError as exc:
            raise ConfigError("loss", loss, f"a loss that fits the data's columns {sorted(columns)}", str(exc)) from None
    if n_train is not None and cfg.train_size is not None and cfg.train_size > n_train:
        raise ConfigError("train_size", cfg.train_size, f"at most the {n_train} training examples the task has",
                          f"Use train_size={n_train} or train_size='all' for all of them.")
    return notes


def _validate_parts_and_rates(cfg: TrainConfig, layers: int | None) -> None:
    """Checks for ``frozen_parts``, ``lower_layers_lr`` and ``lower_layers`` (notebook 02)."""
    if cfg.frozen_parts is not None:
        if isinstance(cfg.frozen_parts, str):
            raise ConfigError("frozen_parts", cfg.frozen_parts, "a tuple of part names",
                              f"Use frozen_parts=({cfg.frozen_parts!r},).")
        problems = check_part_names(cfg.frozen_parts, layers)
        if problems:
            raise ConfigError("frozen_parts", tuple(cfg.frozen_parts), "names of parts the model has",
                              "; ".join(problems) + ".")
        if cfg.freeze_layers or cfg.gradual_unfreezing:
            raise ConfigError("frozen_parts", tuple(cfg.frozen_parts),
                              "None when freeze_layers > 0 or gradual_unfreezing=True",
                              "Choose one way of freezing.")
        if layers is not None and set(cfg.frozen_parts) >= {"embeddings", *(f"layer {i}" for i in range(layers))}:
            raise ConfigError("frozen_parts", tuple(cfg.frozen_parts), "a set that leaves a layer or the embeddings trainable",
                              "Every weight that shapes the embeddings would be frozen; leave at least the top layer.")
    if layers is not None and cfg.freeze_layers == layers and cfg.freeze_embeddings is not False:
        raise ConfigError("freeze_layers", cfg.freeze_layers,
                          f"0..{layers - 1} while the embeddings are frozen (the model has {layers} layers)",
                          "Every weight that shapes the embeddings would be frozen (only BERT's unused pooler "
                          f"would be left, and it gets no gradient). freeze_layers={layers - 1} trains only the top block.")
    if cfg.lower_layers_lr is not None:
        v = cfg.lower_layers_lr
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
            raise ConfigError("lower_layers_lr", v, "None or a positive rate", "The syllabus suggests 1e-5.")
        if cfg.layerwise_decay != 1.0:
            raise ConfigError("lower_layers_lr", v, "None when layerwise_decay != 1.0",
                              "Choose one: a decay per layer, or one lower rate for the lower layers.")
    if cfg.lower_layers is not None:
        if cfg.lower_layers_lr is None:
            raise ConfigError("lower_layers", cfg.lower_layers, "None unless lower_layers_lr is set",
                              "Set lower_layers_lr=1e-5 too.")
        if not _whole(cfg.lower_layers) or cfg.lower_layers < 1:
            raise ConfigError("lower_layers", cfg.lower_layers, "None (the bottom half) or a whole number of at least 1",
                              "3 gives MiniLM's bottom half the lower rate.")
        if layers is not None and cfg.lower_layers > layers:
            raise ConfigError("lower_layers", cfg.lower_layers, f"1..{layers} (the model has {layers} layers)",
                              f"lower_layers={layers // 2} is the bottom half.")


# --------------------------------------------------------------------------- callbacks


class StopFlag:
    """A thread-safe flag a dashboard's Stop button sets; the run ends cleanly at the next step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()


class Recorder(TrainerCallback):
    """Keeps the rate per optimizer step, the training loss, and each evaluation; stops on divergence.

    Divergence: a NaN/infinite training loss, a loss ``explode_factor`` times its
    start, or a validation metric that falls ``collapse_drop`` below its start
    (bounded losses such as CoSENT *fall* when every embedding collapses to
    one point, so the metric is the signal that catches them).
    """

    def __init__(self, result: TrainResult, metric_key: str, stop: StopFlag | None = None,
                 on_update=None, explode_factor: float = 4.0, collapse_drop: float = 0.25):
        self.result, self.metric_key, self.stop = result, f"eval_{metric_key}", stop
        self.on_update = on_update
        self.explode_factor = explode_factor
        # An easy in-batch loss can start near 0 (1e-5 at batch 2) and reach 0.9 on an ordinary batch; below
        # this floor a rise is not called an explosion (the validation-metric collapse check still applies).
        self.loss_floor = 0.5
        self.collapse_drop = collapse_drop  # a validation metric this far below its start means collapse
        self._first_losses: list[float] = []

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        rates = [g["lr"] for g in optimizer.param_groups if g["params"]]
        self.result.group_lrs.append(rates)
        self.result.lr.append(max(rates))

    def on_step_end(self, args, state, control, **kwargs):
        if self.stop is not None and self.stop.is_set():
            control.should_training_stop = True
            self.result.stop_reason = "stopped"

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            loss = float(logs["loss"])
            self.result.train_loss.append({"step": state.global_step, "epoch": state.epoch, "loss": loss})
            self._check_divergence(loss, control)
        if "eval_loss" in logs or self.metric_key in logs:
            entry = {"step": state.global_step, "epoch": state.epoch or 0.0,
                     "loss": logs.get("eval_loss"), "metric": logs.get(self.metric_key)}
            self._check_collapse(entry, control)
            if self.result.evals and self.result.evals[-1]["step"] == entry["step"]:
                self.result.evals[-1].update({k: v for k, v in entry.items() if v is not None})
            else:
                self.result.evals.append(entry)
        if self.on_update is not None:
            self.on_update(self.result, state)

    def _check_collapse(self, entry: dict, control) -> None:
        start = self.result.evals[0].get("metric") if self.result.evals else None
        metric = entry.get("metric")
        if start is None or metric is None or entry["step"] == 0:
            return
        if not math.isfinite(metric) or metric < start - self.collapse_drop:
            self._diverged(f"the validation {self.result.metric} collapsed from {start:.3f} to {metric:.3f}", control)

    def _diverged(self, reason: str, control) -> None:
        control.should_training_stop = True
        if self.result.stop_reason.startswith("diverged"):
            return  # keep the first reason; one message, not one per step
        warm = self.result.config.get("warmup_fraction")
        warm = f"warmup_fraction={warm:g}" if isinstance(warm, (int, float)) else "the warm-up"
        self.result.stop_reason = (
            f"diverged: {reason}; the learning rate (peak {self.result.learning_rate:.1e}) is probably too high "
            f"or the warm-up ({warm}) too short (try 2e-5 to 5e-5 with warmup_fraction=0.1)"
        )

    def _check_divergence(self, loss: float, control) -> None:
        if len(self._first_losses) < 5 and math.isfinite(loss):
            self._first_losses.append(loss)
        reason = None
        if not math.isfinite(loss):
            reason = "the training loss became NaN or infinite"
        elif len(self._first_losses) >= 3 and loss > self.explode_factor * max(max(self._first_losses), self.loss_floor):
            reason = f"the training loss exploded to {loss:.3g} (start {self._first_losses[0]:.3g})"
        if reason:
            self._diverged(reason, control)


class ProgressBar(TrainerCallback):
    """A tqdm progress bar over optimizer steps with the latest loss and validation metric."""

    def __init__(self, desc: str = "training", metric_key: str = ""):
        self.desc, self.metric_key, self.bar = desc, f"eval_{metric_key}", None
        self.postfix: dict = {}

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.max_steps, desc=self.desc, unit="step", leave=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if self.bar is None:
            return
        if "loss" in logs:
            self.postfix["loss"] = f"{logs['loss']:.3f}"
        if self.metric_key in logs:
            self.postfix["dev"] = f"{logs[self.metric_key]:.4f}"
        self.bar.set_postfix(self.postfix, refresh=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _SkippedStartEval(TrainerCallback):
    """Stands in for a skipped ``eval_on_start`` so the run's numbers do not change.

    The trainer's start evaluation iterates one DataLoader, which draws one
    number from torch's global generator before the training sampler shuffles;
    drawing it here keeps every batch (and so every result) identical to a run
    that evaluated at step 0 (``tests/test_training.py`` checks this).
    """

    def on_train_begin(self, args, state, control, **kwargs):
        import torch

        torch.empty((), dtype=torch.int64).random_()


def _trainer_class():
    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer

    class WorkshopTrainer(SentenceTransformerTrainer):
        """The library's trainer; only the scheduler comes from :func:`helpers.schedules.build_scheduler`."""

        schedule_spec: dict = {}
        sync_free_guard: bool = False  # CUDA: check the loss without waiting for the GPU (helpers.devices)

        def add_model_card_callback(self, default_args_dict):
            """Skip model-card tracking: it embeds widget examples at every start (slow on a CPU)."""

        def training_step(self, model, inputs, num_items_in_batch=None):
            """The library's step, but a NaN/infinite loss never reaches the weights.

            Its gradients are dropped (set to ``None``, which AdamW skips), so the
            model keeps the last finite weights while the :class:`Recorder` sees
            the loss in the log and stops the run.
            """
            loss = super().training_step(model, inputs, num_items_in_batch)
            drop_nonfinite_grads(model, self.optimizer, loss, wait=not self.sync_free_guard)
            return loss

        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.lr_scheduler is None:
                self.lr_scheduler = build_scheduler(optimizer or self.optimizer, total_steps=num_training_steps,
                                                    **self.schedule_spec)
                self._created_lr_scheduler = True
            return self.lr_scheduler

    return WorkshopTrainer


# --------------------------------------------------------------------------- the runner


def steps_per_epoch(n_examples: int, batch_size: int, grad_accum: int = 1) -> int:
    """Optimizer steps in one epoch."""
    return max(1, math.ceil(math.ceil(n_examples / batch_size) / grad_accum))


def prepare_task(cfg: TrainConfig | None = None, **overrides):
    """Load the data a config asks for once, to share across many runs (``train(cfg, data=task)``)."""
    base = (cfg or TrainConfig()).replace(**overrides)
    cfg = base.resolved()
    validate(cfg)
    return _load_task_checked(cfg, explicit_train_size=base.train_size not in (None, ALL))


def _load_task_checked(cfg: TrainConfig, explicit_train_size: bool):
    """Load the task; a ``train_size`` the data cannot fill is a :class:`ConfigError` (before any training).

    Only a size the learner asked for is checked: the scale's default sizes
    quietly take everything when a task is smaller.
    """
    try:
        task = load_task(cfg.task, cfg.train_size, cfg.dev_size, cfg.test_size, seed=cfg.seed,
                         score_range=cfg.score_range)
    except SubsetTooLarge as exc:
        validate(cfg, n_train=exc.available)
        raise
    if explicit_train_size:
        validate(cfg, n_train=len(task.train))
    return task


def train(cfg: TrainConfig | None = None, *, model=None, data=None, progress: bool = True, stop: StopFlag | None = None,
          on_update=None, callbacks=(), divergence_guard: bool = True, start_eval: dict | None = None,
          **overrides) -> TrainResult:
    """Fine-tune once with ``cfg`` (plus keyword overrides) and return a :class:`TrainResult`.

    ``model``: train this already-loaded model in place instead of loading
    ``cfg.model``. ``data``: a prepared :class:`helpers.tasks.Task` (else built
    from the config; pass one to reuse loaded data across many runs). ``stop``: a :class:`StopFlag` that ends the run cleanly.
    ``on_update(result, state)`` is called at every log (live dashboards).
    ``divergence_guard=False`` lets the loss explode (the rate range test wants that).
    ``start_eval``: the untuned model's step-0 evaluation (``{"metric": ..., "loss": ...}``)
    measured by an earlier run on the same model, data and loss; it is recorded
    instead of evaluating again (:func:`helpers.run_grid` shares it across a grid).
    Under ``torchrun`` / ``accelerate launch`` every process calls it with the same
    config: the trainer trains data-parallel, every process returns the same result,
    and only rank 0 saves (:mod:`helpers.distributed`, README "Scaling out").
    """
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    from .distributed import (backend, barrier, data_parallel_steps, init_process_group, is_main_process,
                              local_device, score_once, shared_tempdir, world_size)

    base = (cfg or TrainConfig()).replace(**overrides)
    cfg = base.resolved()
    for note in validate(cfg):
        warnings.warn(note, stacklevel=2)
    device = local_device(pick_device(cfg.device))  # cuda:LOCAL_RANK under torchrun
    cfg = replace(cfg, precision=pick_precision(device, cfg.precision))  # recorded as what was used
    world = world_size()
    check_one_gpu(device)  # one process trains on one GPU (helpers.devices); torchrun for several
    if world > 1:
        if cfg.gradual_unfreezing:
            raise ConfigError("gradual_unfreezing", True, f"False when {world} processes train together",
                              "DistributedDataParallel fixes the trainable weights when it starts; "
                              "use freeze_layers, or train in one process.")
        init_process_group(device)
    seed_everything(cfg.seed)
    task = data
    if task is None:
        task = _load_task_checked(cfg, explicit_train_size=base.train_size not in (None, ALL))
    loss_name = cfg.loss or default_loss(task.columns)
    own_model = model is None
    if model is None:
        model = load_model(cfg.model, device=device, max_seq_length=cfg.max_seq_length)
    validate(cfg, layers=n_layers(model), columns=task.columns)
    if cfg.freeze_layers or cfg.freeze_embeddings:
        freeze_bottom(model, cfg.freeze_layers, cfg.freeze_layers > 0 if cfg.freeze_embeddings is None else cfg.freeze_embeddings)
    if cfg.frozen_parts:
        freeze_parts(model, cfg.frozen_parts)
    trainable = count_parameters(model, trainable_only=True)
    if trainable == 0:
        raise ConfigError("freeze_layers", cfg.freeze_layers, "a setting that leaves something trainable",
                          "Every weight is frozen; freeze fewer layers.")
    if shaping_trainable(model) == 0:
        raise ConfigError("freeze_layers", cfg.freeze_layers, "a setting that leaves a layer or the embeddings trainable",
                          "Every weight that shapes the embeddings is frozen (only weights the output never uses, "
                          "such as BERT's pooler, are trainable); freeze fewer layers.")

    # several processes: the rule scales by batch x accumulation x processes; each process sees 1/world of the data
    lr = scaled_learning_rate(cfg.learning_rate, cfg.batch_size, cfg.base_batch_size, cfg.lr_scaling,
                              cfg.grad_accum * world)
    per_epoch = steps_per_epoch(len(task.train), cfg.batch_size, cfg.grad_accum) if world == 1 else \
        data_parallel_steps(len(task.train), cfg.batch_size, cfg.grad_accum, world)
    evaluate = cfg.evals_per_epoch > 0
    reuse_start = evaluate and start_eval is not None and start_eval.get("metric") is not None
    eval_steps = max(1, round(per_epoch / cfg.evals_per_epoch)) if evaluate else per_epoch
    total = cfg.max_steps or math.ceil(per_epoch * cfg.epochs)
    if cfg.lower_layers_lr is not None:
        mapping = rates_lr_mapping(model, part_rates(model, lr, low=cfg.lower_layers_lr, lower_layers=cfg.lower_layers), lr)
    else:
        mapping = layerwise_lr_mapping(model, lr, cfg.layerwise_decay)
    result = TrainResult(config=asdict(cfg), metric=task.metric, device=device, precision=cfg.precision, learning_rate=lr,
                         effective_batch=effective_batch(cfg.batch_size, cfg.grad_accum, world), world_size=world,
                         train_examples=len(task.train), total_params=count_parameters(model))
    result.layer_lrs = part_rates(model, lr, cfg.layerwise_decay, cfg.lower_layers_lr, cfg.lower_layers)

    loss = make_loss(loss_name, model, scale=cfg.loss_scale, mini_batch_size=cfg.mini_batch_size)
    if world > 1 and is_inbatch(loss_name):
        loss.gather_across_devices = cfg.gather_across_devices
    use_best = cfg.early_stopping_patience is not None
    metric_for_best = "loss" if cfg.early_stopping_metric == "loss" else task.dev_metric_key
    # CUDA: the best weights stay in memory when they fit (helpers.devices); elsewhere checkpoints on disk
    keep = best_weights_place(device, _weight_bytes(model), world=world) if use_best else "disk"
    on_disk = use_best and keep == "disk"
    tmp = shared_tempdir("workshop-run-")  # the same folder on every process: all restore the same checkpoint
    try:
        args = SentenceTransformerTrainingArguments(
            output_dir=tmp,
            num_train_epochs=cfg.epochs,
            max_steps=cfg.max_steps or -1,
            per_device_train_batch_size=cfg.batch_size,
            per_device_eval_batch_size=cfg.eval_batch_size,
            gradient_accumulation_steps=cfg.grad_accum,
            learning_rate=lr,
            weight_decay=cfg.weight_decay,
            warmup_steps=warmup_steps(total, cfg.warmup_fraction),
            learning_rate_mapping=mapping,
            eval_strategy="steps" if evaluate else "no",
            eval_steps=eval_steps,
            eval_on_start=evaluate and not reuse_start,
            logging_steps=logging_steps(device, total),  # 1 on a CPU; every few steps on CUDA
            logging_nan_inf_filter=False,
            save_strategy="steps" if on_disk else "no",
            save_steps=eval_steps,
            save_only_model=True,
            save_total_limit=2 if on_disk else None,
            load_best_model_at_end=on_disk,
            metric_for_best_model=metric_for_best if use_best else None,
            seed=cfg.seed,
            data_seed=cfg.seed,
            report_to="none",
            disable_tqdm=True,
            use_cpu=device == "cpu",
            **loader_settings(device),  # CPU: none; CUDA: persistent workers tokenise ahead
            **({"ddp_backend": backend(device), "save_on_each_node": True} if world > 1 else {}),
            batch_sampler=BatchSamplers.NO_DUPLICATES if is_inbatch(loss_name) else BatchSamplers.BATCH_SAMPLER,
            **mixed_precision(device, cfg.precision),
        )
        recorder = Recorder(result, task.dev_metric_key, stop=stop, on_update=on_update)
        if reuse_start:
            result.evals.append({"step": 0, "epoch": 0.0, "loss": start_eval.get("loss") if cfg.eval_loss else None,
                                 "metric": start_eval["metric"]})
        if not divergence_guard:
            recorder.explode_factor, recorder.collapse_drop = float("inf"), float("inf")
        cbs = [recorder, *callbacks]
        if reuse_start:
            cbs.append(_SkippedStartEval())
        unfreezer = None
        if cfg.gradual_unfreezing:
            unfreezer = GradualUnfreezing(model, cfg.unfreeze_start_layers)
            cbs.append(unfreezer)
        keeper = None
        if use_best:
            cbs.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
            if not on_disk:
                keeper = BestWeights(model, f"eval_{metric_for_best}", cfg.early_stopping_metric != "loss", keep)
                cbs.append(keeper)
        if progress and is_main_process():
            cbs.append(ProgressBar(f"{task.name} {loss_name} lr={lr:.1e}", task.dev_metric_key))
        Trainer = _trainer_class()
        trainer = Trainer(model=model, args=args, train_dataset=task.train,
                          eval_dataset=task.dev if evaluate and cfg.eval_loss else None,
                          loss=loss, evaluator=task.dev_evaluator if evaluate else None, callbacks=cbs)
        check_trainer_batch(trainer.args, cfg.batch_size)  # no nn.DataParallel multiplying the batch
        trainer.sync_free_guard = sync_free_guard(device)
        trainer.schedule_spec = {"schedule": cfg.schedule, "warmup_fraction": cfg.warmup_fraction,
                                 "floor": cfg.floor, "decay_fraction": cfg.decay_fraction}
        _quiet_trainer(trainer)
        initial = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()} if use_best else None
        oom = None
        with PeakMemory(device) as mem:
            start = time.perf_counter()
            try:
                trainer.train()
            except KeyboardInterrupt:
                result.stop_reason = "interrupted"
                for cb in cbs:  # on_train_end never came: close the progress bar
                    if isinstance(cb, ProgressBar):
                        cb.on_train_end(args, trainer.state, trainer.control)
            except RuntimeError as exc:  # torch.OutOfMemoryError is a RuntimeError
                if not _is_oom(exc):
                    raise
                oom = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
            result.wall_time = time.perf_counter() - start
        if oom is not None:
            # Drop every reference to the trainer, its optimizer state and the gradients *before*
            # raising: the traceback keeps this frame (and its locals) alive in a notebook.
            for cb in cbs:
                if isinstance(cb, ProgressBar):
                    cb.on_train_end(args, trainer.state, trainer.control)
            if unfreezer is not None:
                for p in model.parameters():
                    p.requires_grad_(True)
            model.zero_grad(set_to_none=True)
            trainer.optimizer = trainer.lr_scheduler = None
            trainer = loss = recorder = cbs = unfreezer = initial = keeper = None
            if own_model:
                model = None
            _free_accelerator_memory()
            raise _oom_error(cfg, loss_name, device, oom)
        if result.stop_reason == "finished" and use_best and trainer.state.global_step < trainer.state.max_steps:
            result.stop_reason = "early stopping"
        if use_best:
            result.best_step = _restore_best(trainer, model, result, initial, cfg.early_stopping_metric == "loss",
                                             memory=keeper)
        result.trainable_params = max(trainable, count_parameters(model, trainable_only=True))
        result.steps = trainer.state.global_step
        result.steps_per_sec = result.steps / result.wall_time if result.wall_time else 0.0
        result.examples_per_sec = result.steps * result.effective_batch / result.wall_time if result.wall_time else 0.0
        result.peak_memory_mb, result.memory_delta_mb = mem.peak_mb, mem.delta_mb
        if unfreezer is not None:
            result.unfreeze_history = unfreezer.history
            for p in model.parameters():
                p.requires_grad_(True)
        model.eval()
        if cfg.final_test:
            result.test_metric = score_once(model, task.test_evaluator)  # computed once, the same on every process
        result.model = model
        if cfg.output_dir and is_main_process():
            save_model_atomically(model, cfg.output_dir)
        barrier()  # several processes: the model is written and every checkpoint read before any goes on
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _quiet_trainer(trainer) -> None:
    """Drop the trainer's own printers and bars; the workshop shows its own progress bar."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    try:
        from transformers.utils.notebook import NotebookProgressCallback

        trainer.remove_callback(NotebookProgressCallback)
    except ImportError:  # pragma: no cover
        pass


def _restore_best(trainer, model, result: TrainResult, initial: dict, by_loss: bool, memory=None) -> int | None:
    """Make sure ``model`` holds the best evaluation's weights; return that evaluation's step.

    The trainer restores its best checkpoint itself, but it never counts the
    evaluation before training (step 0, no checkpoint) and it restores nothing
    after an interrupt. When the untrained model was best, its weights come
    back from ``initial``. ``memory``: a :class:`helpers.devices.BestWeights` holding the
    best weights in memory (CUDA), used instead of checkpoints.
    """
    key = "loss" if by_loss else "metric"
    evals = [e for e in result.evals if e.get(key) is not None]
    if not evals:
        return None
    best = (min if by_loss else max)(evals, key=lambda e: e[key])
    if best["step"] == 0:
        model.load_state_dict(initial)
    elif memory is not None:
        if not memory.restore(model, best["step"]):  # no copy of that evaluation: keep the last weights
            return evals[-1]["step"]
    elif result.stop_reason == "interrupted" or trainer.state.best_global_step != best["step"]:
        ckpt = os.path.join(trainer.args.output_dir, f"checkpoint-{best['step']}")
        loaded = False
        if os.path.isdir(ckpt):
            try:
                trainer._load_from_checkpoint(ckpt)
                loaded = True
            except Exception as exc:  # e.g. a checkpoint half-written when the run was interrupted
                warnings.warn(f"Could not restore the best checkpoint ({type(exc).__name__}: {exc}); "
                              "keeping the last weights.", stacklevel=3)
        if not loaded:  # no checkpoint of the best evaluation: keep the last weights and say so
            last = evals[-1]
            return last["step"]
    return best["step"]


def _weight_bytes(model) -> int:
    """Bytes of the model's parameters and buffers (what a copy of its weights takes)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def save_model_atomically(model, output_dir: str | os.PathLike) -> Path:
    """Save to a sibling temporary folder, then rename, so a crash never leaves half a model.

    An error or Ctrl-C while saving leaves ``output_dir`` as it was (the
    previous model, or nothing) and no temporary folder behind.
    """
    out = Path(output_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model.save(str(tmp))
        if out.exists():
            old = out.with_name(f".{out.name}-old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)  # left by an earlier crash of this process id
            out.rename(old)
            try:
                tmp.rename(out)
            except BaseException:
                old.rename(out)  # put the previous model back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# --------------------------------------------------------------------------- out of memory


def _is_oom(exc: BaseException) -> bool:
    """True for CUDA/MPS out-of-memory errors (``torch.OutOfMemoryError`` or its older RuntimeError form)."""
    import torch

    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _free_accelerator_memory() -> None:
    """Collect the failed run's tensors and hand cached CUDA blocks back."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        try:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        except RuntimeError:  # pragma: no cover - a broken context: nothing more to free
            pass
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        mps.empty_cache()


def _oom_error(cfg: TrainConfig, loss_name: str, device: str, original: str) -> TrainingOOMError:
    """The error for an out-of-memory run, with the settings that need less memory for this loss."""
    bs, ga = cfg.batch_size, cfg.grad_accum
    half = max(1, bs // 2)
    ways = [f"a smaller batch: batch_size={half}"]
    if is_inbatch(loss_name):
        if loss_name == "cached_mnrl":
            ways.append(f"a smaller chunk for cached_mnrl: mini_batch_size={max(1, min(cfg.mini_batch_size, bs) // 2)} "
                        f"(the whole batch of {bs} still supplies the negatives)")
        else:
            ways.append(f"keep batch_size={bs} with loss='cached_mnrl', mini_batch_size={max(1, half // 2)}: "
                        "every example of the batch stays a negative at the memory of a mini-batch "
                        "(grad_accum does not help in-batch losses such as mnrl: each micro-batch "
                        "only sees its own negatives)")
        ways.append(f"for per-example losses (cosent, cosine, angle) grad_accum keeps the effective batch: "
                    f"batch_size={half}, grad_accum={ga * 2}")
    else:
        ways.append(f"keep the effective batch of {bs * ga} with gradient accumulation: batch_size={half}, "
                    f"grad_accum={ga * 2} (exact for per-example losses such as {loss_name})")
        ways.append("for in-batch losses (mnrl) use loss='cached_mnrl' with a small mini_batch_size instead of grad_accum")
    ways.append("freeze the bottom layers: freeze_layers=3 (frozen layers keep no gradients or optimizer state)")
    ways.append(f"shorter inputs: max_seq_length={max(8, (cfg.max_seq_length or 128) // 2)}")
    message = (
        f"Training ran out of {device} memory (batch_size={bs}, grad_accum={ga}, loss={loss_name!r}, "
        f"max_seq_length={cfg.max_seq_length}). Ways out:\n"
        + "\n".join(f"  - {w}" for w in ways)
        + f"\nThe failed run's memory was released; the next train() call starts clean. (Original error: {original})"
    )
    return TrainingOOMError(message, ways, device)
