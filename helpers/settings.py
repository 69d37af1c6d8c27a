"""The settings of one run: :class:`TrainConfig`, its scale defaults, and :func:`validate` (notebook 00 onwards).

Runner layer: the one place settings are checked. Every message names the
setting, the value, the allowed range and a way out, and comes before any
training starts. Uses the knobs' own names (schedules, losses, batch-size
rules, freezable parts) so that a new knob is checked where it is defined.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, fields, replace

from .batching import SCALING_RULES
from .config import PRECISIONS, get_scale
from .freezing import check_part_names
from .losses import LOSSES, check_loss_fits, default_loss
from .schedules import SCHEDULES

ALL = "all"


class ConfigError(ValueError):
    """A setting that cannot work, raised before any training starts
    (notebook 00; used by all; caught in notebook 02)."""

    def __init__(self, setting: str, value, allowed: str, suggestion: str = ""):
        self.setting, self.value, self.allowed, self.suggestion = setting, value, allowed, suggestion
        msg = f"{setting}={value!r} is not allowed: {allowed}."
        if suggestion:
            msg += f" {suggestion}"
        super().__init__(msg)

@dataclass
class TrainConfig:
    """Every knob the workshop teaches. ``None`` sizes, epochs and batch come from the workshop scale
    (notebook 00; used by all).

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
    """Check a resolved config before training; raise :class:`ConfigError`, return warnings (notebook 00; used by all).

    ``layers``, ``columns`` and ``n_train`` enable the checks that need the
    model and data. Every message names the setting, the value, the allowed
    range and a way out.
    """
    notes = _check_rate_and_schedule(cfg)
    _check_steps_and_batches(cfg)
    _check_stopping_and_data(cfg)
    _check_freezing(cfg)
    _validate_parts_and_rates(cfg, layers)
    _check_against_model_and_data(cfg, layers, columns, n_train)
    return notes


def _check_rate_and_schedule(cfg: TrainConfig) -> list[str]:
    """The peak rate (warns when far too high), the schedule and its fractions (notebook 01)."""
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
    return notes


def _check_steps_and_batches(cfg: TrainConfig) -> None:
    """Batch sizes, accumulation, evaluations, epochs, steps, rate scaling and weight decay (notebooks 01-04)."""
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


def _check_stopping_and_data(cfg: TrainConfig) -> None:
    """Early stopping, the validation loss, the loss name and the split sizes (notebooks 04, 05)."""
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


def _check_freezing(cfg: TrainConfig) -> None:
    """Static and gradual freezing (notebook 02)."""
    if not _whole(cfg.freeze_layers) or cfg.freeze_layers < 0:
        raise ConfigError("freeze_layers", cfg.freeze_layers, "a whole number of at least 0",
                          "0 trains every layer; 2-4 of MiniLM's 6 freeze the bottom.")
    if cfg.gradual_unfreezing and cfg.freeze_layers:
        raise ConfigError("freeze_layers", cfg.freeze_layers, "0 when gradual_unfreezing=True",
                          "Gradual unfreezing decides what is frozen; use unfreeze_start_layers.")
    if not _whole(cfg.unfreeze_start_layers) or cfg.unfreeze_start_layers < 1:
        raise ConfigError("unfreeze_start_layers", cfg.unfreeze_start_layers, "a whole number of at least 1",
                          "1 starts with only the top layer trainable.")


def _check_against_model_and_data(cfg: TrainConfig, layers: int | None, columns, n_train: int | None) -> None:
    """The checks that need the model's layer count, the data's columns or its size."""
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


__all__ = ["ALL", "ConfigError", "TrainConfig", "validate"]
