"""The learning-rate range test (Smith 2015; fastai's ``lr_find``), on the workshop's trainer (notebook 01).

The rate grows exponentially from ``start`` to ``end`` over a few hundred
optimizer steps on real pairs while the training loss is recorded; the sweep
stops early once the smoothed loss exceeds ``stop_factor`` times its best.
The model's weights are restored afterwards, so the test changes nothing.

Suggestions, all computed on the smoothed loss against log10(rate):

* ``valley`` (fastai's default): a point two-thirds of the way down the longest descending stretch;
* ``steep``: where the loss falls fastest;
* ``min/10``: a tenth of the rate at the lowest loss.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from transformers import TrainerCallback

from .models import load_model
from .settings import TrainConfig
from .training import train


class ExponentialSweep(TrainerCallback):
    """Sets every param group's rate to ``start * (end/start) ** (step/(steps-1))`` before each optimizer step
    (notebook 01)."""

    def __init__(self, start: float, end: float, steps: int, beta: float = 0.98, stop_factor: float = 4.0):
        self.start, self.end, self.steps = start, end, steps
        self.beta, self.stop_factor = beta, stop_factor
        self.rates: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self._avg = 0.0

    def rate(self, step: int) -> float:
        return self.start * (self.end / self.start) ** (step / max(1, self.steps - 1))

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        lr = self.rate(state.global_step)
        for g in optimizer.param_groups:
            g["lr"] = lr

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.rates.append(optimizer.param_groups[0]["lr"])

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        loss = float(logs["loss"])
        self.losses.append(loss)
        if not math.isfinite(loss):
            control.should_training_stop = True
            return
        self._avg = self.beta * self._avg + (1 - self.beta) * loss
        smooth = self._avg / (1 - self.beta ** len(self.losses))
        self.smoothed.append(smooth)
        if len(self.smoothed) > 5 and smooth > self.stop_factor * min(self.smoothed):
            control.should_training_stop = True


@dataclass
class RangeTestResult:
    """Rates, raw and smoothed losses of a sweep, and the suggested rates (notebook 01)."""

    rates: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestions: dict[str, float] = field(default_factory=dict)
    rule: str = "valley"
    stopped_early: bool = False
    steps: int = 0
    wall_time: float = 0.0

    @property
    def suggestion(self) -> float:
        """The rate the default rule (``valley``) picks."""
        return self.suggestions[self.rule]


def valley(rates, losses) -> float:
    """fastai's ``valley`` rule: longest descending run of the loss, two-thirds of the way down it (notebook 01)."""
    n = len(losses)
    lds, max_start, max_end = [1] * n, 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end, max_start = i, i - lds[i]
    sections = (max_end - max_start) / 3
    return float(rates[max_start + int(sections) + int(sections / 2)])


def suggest(rates, smoothed, skip_start: float = 0.1, skip_end: int = 5) -> dict[str, float]:
    """The three suggestions on the trimmed curve (first 10% and last 5 points dropped, as fastai does)
    (notebook 01)."""
    n = len(smoothed)
    lo = int(n * skip_start)
    hi = max(lo + 3, n - skip_end) if n - skip_end > lo + 3 else n
    r, s = np.asarray(rates[lo:hi]), np.asarray(smoothed[lo:hi])
    if len(s) < 3:
        raise ValueError(f"The sweep recorded only {n} losses; run more steps (at least 20).")
    grads = np.gradient(s, np.log10(r))
    return {
        "valley": valley(r, s),
        "steep": float(r[int(np.argmin(grads))]),
        "min/10": float(r[int(np.argmin(s))] / 10),
    }


def lr_range_test(cfg: TrainConfig | None = None, start: float = 1e-7, end: float = 1e-1, steps: int = 100,
                  model=None, data=None, progress: bool = True, stop_factor: float = 4.0) -> RangeTestResult:
    """Sweep the rate from ``start`` to ``end`` over ``steps`` optimizer steps of ``cfg``'s task and loss
    (notebook 01).

    ``model`` (loaded if None) gets its weights back afterwards. ``data`` is a
    prepared task to reuse. Nothing is evaluated during the sweep.
    """
    if not 0 < start < end:
        raise ValueError(f"Need 0 < start < end, got start={start:g}, end={end:g}.")
    if steps < 20:
        raise ValueError(f"steps={steps} is too few for a sweep; use at least 20 (a few hundred is typical).")
    cfg = (cfg or TrainConfig())
    if model is None:
        model = load_model(cfg.model, device=cfg.device, max_seq_length=cfg.max_seq_length)
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    sweep = ExponentialSweep(start, end, steps, stop_factor=stop_factor)
    try:
        run = train(cfg.replace(learning_rate=start, schedule="constant", warmup_fraction=0.0, max_steps=steps,
                                early_stopping_patience=None, evals_per_epoch=0, final_test=False, epochs=1000),
                    model=model, data=data, progress=progress, callbacks=[sweep], divergence_guard=False)
    finally:
        model.load_state_dict(saved)
        for p in model.parameters():
            p.requires_grad_(True)
    n = min(len(sweep.rates), len(sweep.smoothed))
    rates, smoothed = sweep.rates[:n], sweep.smoothed[:n]
    return RangeTestResult(rates, sweep.losses[:n], smoothed, suggest(rates, smoothed),
                           stopped_early=n < steps, steps=n, wall_time=run.wall_time)
