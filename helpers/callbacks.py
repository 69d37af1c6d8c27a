"""The trainer and its callbacks for one run (notebook 00 onwards): recorder, progress bar, stop flag.

Runner layer. :func:`helpers.train` hands these to sentence-transformers'
``SentenceTransformerTrainer``: :class:`Recorder` keeps the rate per step,
the losses and every evaluation and stops a diverging run; :class:`ProgressBar`
is the one bar a run shows; :class:`StopFlag` is what a dashboard's Stop button
sets (notebooks 01-03); :class:`SkippedStartEval` keeps the numbers identical
when a grid shares the untuned model's evaluation; :func:`trainer_class` is
the library's trainer with the workshop's scheduler and a NaN guard.
"""
from __future__ import annotations

import math
import threading

from transformers import TrainerCallback

from .devices import drop_nonfinite_grads
from .results import TrainResult
from .schedules import build_scheduler


class StopFlag:
    """A thread-safe flag a dashboard's Stop button sets; the run ends cleanly at the next step (notebooks 01-04)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()


class Recorder(TrainerCallback):
    """Keeps the rate per optimizer step, the training loss, and each evaluation; stops on divergence
    (notebook 00; used by all).

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
    """A tqdm progress bar over optimizer steps with the latest loss and validation metric
    (notebook 00; used by all)."""

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


class SkippedStartEval(TrainerCallback):
    """Stands in for a skipped ``eval_on_start`` so the run's numbers do not change (notebook 00; used by all).

    The trainer's start evaluation iterates one DataLoader, which draws one
    number from torch's global generator before the training sampler shuffles;
    drawing it here keeps every batch (and so every result) identical to a run
    that evaluated at step 0 (``tests/test_training.py`` checks this).
    """

    def on_train_begin(self, args, state, control, **kwargs):
        import torch

        torch.empty((), dtype=torch.int64).random_()


def trainer_class():
    """The workshop's trainer class: the library's trainer with the workshop's scheduler (notebook 00; used by all)."""
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


def quiet_trainer(trainer) -> None:
    """Drop the trainer's own printers and bars; the workshop shows its own progress bar (notebook 00; used by all)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    try:
        from transformers.utils.notebook import NotebookProgressCallback

        trainer.remove_callback(NotebookProgressCallback)
    except ImportError:  # pragma: no cover
        pass


__all__ = ["StopFlag", "Recorder", "ProgressBar", "SkippedStartEval", "trainer_class", "quiet_trainer"]
