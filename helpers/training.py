"""The training runner: one configuration, one call, a result with everything measured.

Every notebook trains through :func:`train`. It runs the library's
``SentenceTransformerTrainer`` (its arguments, losses, evaluators, callbacks,
``learning_rate_mapping`` and ``EarlyStoppingCallback``); the workshop only
adds what the libraries lack: rate scaling for the batch size, gradual
unfreezing at the right moment, one scheduler factory shared with the plots,
and a recorder that keeps the rate at every optimizer step, the training
loss, and the validation loss and metric at every evaluation.

Nothing is left on disk unless ``output_dir`` is set (checkpoints for
early stopping live in a temporary folder that is removed), and the same seed
on the same machine gives the same numbers.
"""
from __future__ import annotations

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
from .config import get_scale, mixed_precision, pick_device, seed_everything
from .evaluation import score
from .freezing import GradualUnfreezing, freeze_bottom, layerwise_lr_mapping, layerwise_rates
from .losses import LOSSES, check_loss_fits, default_loss, is_inbatch, make_loss
from .memory import PeakMemory
from .models import count_parameters, load_model, n_layers
from .schedules import SCHEDULES, build_scheduler, warmup_steps
from .tasks import load_task

ALL = "all"


class ConfigError(ValueError):
    """A setting that cannot work, raised before any training starts."""

    def __init__(self, setting: str, value, allowed: str, suggestion: str = ""):
        self.setting, self.value, self.allowed = setting, value, allowed
        msg = f"{setting}={value!r} is not allowed: {allowed}."
        if suggestion:
            msg += f" {suggestion}"
        super().__init__(msg)


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
    evals_per_epoch: int | None = None
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
    loss_scale: float | None = None  # in-batch / CoSENT scale (1 / temperature)
    mini_batch_size: int = 32  # cached_mnrl
    eval_batch_size: int = 32  # fixed so validation losses compare across batch sizes
    score_range: tuple[float, float] = (0.0, 1.0)  # for a user's file of scored pairs
    output_dir: str | None = None  # save the final model here (atomically)

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
    effective_batch: int = 0
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


# --------------------------------------------------------------------------- validation


def validate(cfg: TrainConfig, layers: int | None = None, columns=None, n_train: int | None = None) -> list[str]:
    """Check a resolved config before training; raise :class:`ConfigError`, return warnings.

    ``layers``, ``columns`` and ``n_train`` enable the checks that need the
    model and data. Every message names the setting, the value, the allowed
    range and a way out.
    """
    notes = []
    lr = cfg.learning_rate
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError("learning_rate", lr, "it must be a positive number", "Fine-tuning usually uses 1e-5 to 1e-4.")
    if lr > 1e-2:
        notes.append(f"learning_rate={lr:g} is far above the usual 1e-5 to 1e-4 for AdamW fine-tuning; expect divergence.")
    if cfg.schedule not in SCHEDULES:
        raise ConfigError("schedule", cfg.schedule, f"one of {', '.join(SCHEDULES)}")
    if not 0 <= cfg.warmup_fraction < 1:
        raise ConfigError("warmup_fraction", cfg.warmup_fraction, "a fraction in [0, 1)", "About 0.1 is usual.")
    if cfg.schedule == "cosine_floor" and cfg.floor is None:
        raise ConfigError("floor", None, "a rate below the peak for schedule='cosine_floor'", "For example floor=1e-6.")
    if cfg.floor is not None and not 0 <= cfg.floor < lr:
        raise ConfigError("floor", cfg.floor, f"in [0, learning_rate={lr:g})", "The floor is the lowest rate of the decay.")
    if not 0 < cfg.decay_fraction <= 1:
        raise ConfigError("decay_fraction", cfg.decay_fraction, "a fraction in (0, 1]")
    for name in ("batch_size", "grad_accum", "evals_per_epoch", "base_batch_size", "eval_batch_size", "mini_batch_size"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(name, v, "a whole number of at least 1")
    if not isinstance(cfg.epochs, (int, float)) or cfg.epochs <= 0:
        raise ConfigError("epochs", cfg.epochs, "a positive number")
    if cfg.max_steps is not None and (not isinstance(cfg.max_steps, int) or cfg.max_steps < 1):
        raise ConfigError("max_steps", cfg.max_steps, "None or a whole number of at least 1")
    if cfg.lr_scaling not in SCALING_RULES:
        raise ConfigError("lr_scaling", cfg.lr_scaling, f"one of {', '.join(SCALING_RULES)}")
    if not 0 <= cfg.weight_decay < 1:
        raise ConfigError("weight_decay", cfg.weight_decay, "in [0, 1)", "AdamW fine-tuning usually uses 0.01.")
    if not 0 < cfg.layerwise_decay <= 1:
        raise ConfigError("layerwise_decay", cfg.layerwise_decay, "in (0, 1]", "1.0 means one rate for all layers; 0.8-0.95 is usual.")
    if cfg.early_stopping_patience is not None and (
        not isinstance(cfg.early_stopping_patience, int) or cfg.early_stopping_patience < 1
    ):
        raise ConfigError("early_stopping_patience", cfg.early_stopping_patience, "None or at least 1", "The syllabus uses 3.")
    if cfg.early_stopping_metric not in ("task", "loss"):
        raise ConfigError("early_stopping_metric", cfg.early_stopping_metric, "'task' or 'loss'")
    if cfg.loss is not None and cfg.loss not in LOSSES:
        raise ConfigError("loss", cfg.loss, f"one of {', '.join(LOSSES)}")
    for name in ("train_size", "dev_size", "test_size"):
        v = getattr(cfg, name)
        if v is not None and (not isinstance(v, int) or v < 1):
            raise ConfigError(name, v, "None, 'all' or a whole number of at least 1")
    if not isinstance(cfg.freeze_layers, int) or cfg.freeze_layers < 0:
        raise ConfigError("freeze_layers", cfg.freeze_layers, "a whole number of at least 0")
    if cfg.gradual_unfreezing and cfg.freeze_layers:
        raise ConfigError("freeze_layers", cfg.freeze_layers, "0 when gradual_unfreezing=True",
                          "Gradual unfreezing decides what is frozen; use unfreeze_start_layers.")
    if layers is not None:
        if cfg.freeze_layers > layers:
            raise ConfigError("freeze_layers", cfg.freeze_layers, f"0..{layers} (the model has {layers} layers)",
                              f"freeze_layers={layers - 1} trains only the top block.")
        if not 1 <= cfg.unfreeze_start_layers <= layers:
            raise ConfigError("unfreeze_start_layers", cfg.unfreeze_start_layers, f"1..{layers}")
    if columns is not None:
        loss = cfg.loss or default_loss(columns)
        try:
            check_loss_fits(loss, columns)
        except ValueError as exc:
            raise ConfigError("loss", loss, "a loss that fits the data's columns", str(exc)) from None
    if n_train is not None and cfg.train_size is not None and cfg.train_size > n_train:
        raise ConfigError("train_size", cfg.train_size, f"at most the {n_train} training examples", "Use 'all' for all of them.")
    return notes


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
        self.result.stop_reason = (
            f"diverged: {reason}; the learning rate is probably too high or the warm-up too short "
            "(try 2e-5 to 5e-5 with warmup_fraction=0.1)"
        )

    def _check_divergence(self, loss: float, control) -> None:
        if len(self._first_losses) < 5 and math.isfinite(loss):
            self._first_losses.append(loss)
        reason = None
        if not math.isfinite(loss):
            reason = "the training loss became NaN or infinite"
        elif len(self._first_losses) >= 3 and loss > self.explode_factor * max(max(self._first_losses), 1e-3):
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


def _trainer_class():
    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer

    class WorkshopTrainer(SentenceTransformerTrainer):
        """The library's trainer; only the scheduler comes from :func:`helpers.schedules.build_scheduler`."""

        schedule_spec: dict = {}

        def add_model_card_callback(self, default_args_dict):
            """Skip model-card tracking: it embeds widget examples at every start (slow on a CPU)."""

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
    cfg = (cfg or TrainConfig()).replace(**overrides).resolved()
    validate(cfg)
    return load_task(cfg.task, cfg.train_size, cfg.dev_size, cfg.test_size, seed=cfg.seed, score_range=cfg.score_range)


def train(cfg: TrainConfig | None = None, *, model=None, data=None, progress: bool = True, stop: StopFlag | None = None,
          on_update=None, callbacks=(), **overrides) -> TrainResult:
    """Fine-tune once with ``cfg`` (plus keyword overrides) and return a :class:`TrainResult`.

    ``model``: train this already-loaded model in place instead of loading
    ``cfg.model``. ``data``: a prepared :class:`helpers.tasks.Task` (else built
    from the config; pass one to reuse loaded data across many runs). ``stop``: a :class:`StopFlag` that ends the run cleanly.
    ``on_update(result, state)`` is called at every log (live dashboards).
    """
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    cfg = (cfg or TrainConfig()).replace(**overrides).resolved()
    for note in validate(cfg):
        warnings.warn(note, stacklevel=2)
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    task = data
    if task is None:
        task = load_task(cfg.task, cfg.train_size, cfg.dev_size, cfg.test_size, seed=cfg.seed, score_range=cfg.score_range)
    loss_name = cfg.loss or default_loss(task.columns)
    if model is None:
        model = load_model(cfg.model, device=device, max_seq_length=cfg.max_seq_length)
    validate(cfg, layers=n_layers(model), columns=task.columns)
    if cfg.freeze_layers or cfg.freeze_embeddings:
        freeze_bottom(model, cfg.freeze_layers, cfg.freeze_layers > 0 if cfg.freeze_embeddings is None else cfg.freeze_embeddings)
    trainable = count_parameters(model, trainable_only=True)
    if trainable == 0:
        raise ConfigError("freeze_layers", cfg.freeze_layers, "a setting that leaves something trainable",
                          "Every weight is frozen; freeze fewer layers.")

    lr = scaled_learning_rate(cfg.learning_rate, cfg.batch_size, cfg.base_batch_size, cfg.lr_scaling, cfg.grad_accum)
    per_epoch = steps_per_epoch(len(task.train), cfg.batch_size, cfg.grad_accum)
    eval_steps = max(1, round(per_epoch / cfg.evals_per_epoch))
    total = cfg.max_steps or math.ceil(per_epoch * cfg.epochs)
    mapping = layerwise_lr_mapping(model, lr, cfg.layerwise_decay)
    result = TrainResult(config=asdict(cfg), metric=task.metric, device=device, learning_rate=lr,
                         effective_batch=effective_batch(cfg.batch_size, cfg.grad_accum),
                         train_examples=len(task.train), total_params=count_parameters(model))
    result.layer_lrs = layerwise_rates(model, lr, cfg.layerwise_decay)

    loss = make_loss(loss_name, model, scale=cfg.loss_scale, mini_batch_size=cfg.mini_batch_size)
    use_best = cfg.early_stopping_patience is not None
    metric_for_best = "loss" if cfg.early_stopping_metric == "loss" else task.dev_metric_key
    tmp = tempfile.mkdtemp(prefix="workshop-run-")
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
            eval_strategy="steps",
            eval_steps=eval_steps,
            eval_on_start=True,
            logging_steps=1,
            logging_nan_inf_filter=False,
            save_strategy="steps" if use_best else "no",
            save_steps=eval_steps,
            save_only_model=True,
            save_total_limit=2 if use_best else None,
            load_best_model_at_end=use_best,
            metric_for_best_model=metric_for_best if use_best else None,
            seed=cfg.seed,
            data_seed=cfg.seed,
            report_to="none",
            disable_tqdm=True,
            use_cpu=device == "cpu",
            dataloader_num_workers=0,
            batch_sampler=BatchSamplers.NO_DUPLICATES if is_inbatch(loss_name) else BatchSamplers.BATCH_SAMPLER,
            **mixed_precision(device),
        )
        recorder = Recorder(result, task.dev_metric_key, stop=stop, on_update=on_update)
        cbs = [recorder, *callbacks]
        unfreezer = None
        if cfg.gradual_unfreezing:
            unfreezer = GradualUnfreezing(model, cfg.unfreeze_start_layers)
            cbs.append(unfreezer)
        if use_best:
            cbs.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
        if progress:
            cbs.append(ProgressBar(f"{task.name} {loss_name} lr={lr:.1e}", task.dev_metric_key))
        Trainer = _trainer_class()
        trainer = Trainer(model=model, args=args, train_dataset=task.train, eval_dataset=task.dev, loss=loss,
                          evaluator=task.dev_evaluator, callbacks=cbs)
        trainer.schedule_spec = {"schedule": cfg.schedule, "warmup_fraction": cfg.warmup_fraction,
                                 "floor": cfg.floor, "decay_fraction": cfg.decay_fraction}
        _quiet_trainer(trainer)
        initial = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()} if use_best else None
        with PeakMemory(device) as mem:
            start = time.perf_counter()
            try:
                trainer.train()
            except KeyboardInterrupt:
                result.stop_reason = "interrupted"
            result.wall_time = time.perf_counter() - start
        if result.stop_reason == "finished" and use_best and trainer.state.global_step < trainer.state.max_steps:
            result.stop_reason = "early stopping"
        if use_best:
            result.best_step = _restore_best(trainer, model, result, initial, cfg.early_stopping_metric == "loss")
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
        result.test_metric = score(model, task.test_evaluator)
        result.model = model
        if cfg.output_dir:
            save_model_atomically(model, cfg.output_dir)
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


def _restore_best(trainer, model, result: TrainResult, initial: dict, by_loss: bool) -> int | None:
    """Make sure ``model`` holds the best evaluation's weights; return that evaluation's step.

    The trainer restores its best checkpoint itself, but it never counts the
    evaluation before training (step 0, no checkpoint) and it restores nothing
    after an interrupt. When the untrained model was best, its weights come
    back from ``initial``.
    """
    key = "loss" if by_loss else "metric"
    evals = [e for e in result.evals if e.get(key) is not None]
    if not evals:
        return None
    best = (min if by_loss else max)(evals, key=lambda e: e[key])
    if best["step"] == 0:
        model.load_state_dict(initial)
    elif result.stop_reason == "interrupted" or trainer.state.best_global_step != best["step"]:
        ckpt = os.path.join(trainer.args.output_dir, f"checkpoint-{best['step']}")
        if os.path.isdir(ckpt):
            trainer._load_from_checkpoint(ckpt)
        else:  # no checkpoint of the best evaluation: keep the last weights and say so
            last = evals[-1]
            return last["step"]
    return best["step"]


def save_model_atomically(model, output_dir: str | os.PathLike) -> Path:
    """Save to a sibling temporary folder, then rename, so a crash never leaves half a model."""
    out = Path(output_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model.save(str(tmp))
        if out.exists():
            old = out.with_name(f".{out.name}-old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
