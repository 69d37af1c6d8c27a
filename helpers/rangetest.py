"""The learning-rate range test (Smith 2015; fastai's ``lr_find``), on the workshop's trainer (notebook 01).

The rate grows exponentially from ``start`` to ``end`` over a few hundred
optimizer steps on real pairs while the training loss is recorded; the sweep
stops early once the smoothed loss exceeds ``stop_factor`` times its best.
The model's weights are restored afterwards, so the test changes nothing.

At workshop scale (80 steps of 16 pairs) the loss of each step jumps between
about 4 and 14 with the batch that came up, and fastai's exponential smoothing
(beta 0.98, a window of about 50 steps) lags most of the sweep: the three rules
then land three orders of magnitude apart. With ``probe`` pairs (the default,
64), the curve is instead the loss on one *fixed* batch after every step,
computed without gradients and without dropout: the same examples each time,
so it moves only with what the rates did to the model, and a light smoothing
(``probe_beta``) suffices.

Suggestions, all computed on the smoothed curve against log10(rate):

* ``valley`` (fastai's default): a point two-thirds of the way down the longest descending stretch;
* ``steep``: where the loss falls fastest;
* ``min/10``: a tenth of the rate at the lowest loss.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from transformers import TrainerCallback

from .losses import default_loss, make_loss
from .models import load_model
from .settings import TrainConfig
from .training import prepare_task, train


class ProbeLoss:
    """The training loss on one fixed batch, without gradients and in eval mode (notebook 01).

    Called after every step of the sweep, it shows what the rates so far did to the model, free of the
    batch-to-batch noise of the per-step training loss. For scored pairs (STS-B) it also records the
    batch's Spearman correlation (``spearman``): a loss can fall because the model collapsed (every
    sentence to one vector gives CoSENT a loss of log(1 + ordered pairs)), the correlation cannot rise so.
    """

    def __init__(self, model, loss_name: str, batch, scale: float | None = None):
        import torch

        self.model = model
        self.loss = make_loss(loss_name, model, scale=scale)
        cols = list(batch.column_names)
        label = next((c for c in ("score", "label") if c in cols), None)
        encode = getattr(model, "preprocess", None) or model.tokenize  # sentence-transformers 6 renamed it
        self.features = [encode(list(batch[c])) for c in cols if c != label]
        self.labels = torch.tensor(batch[label], dtype=torch.float32) if label else None
        self.size = len(batch)
        self.spearman: list[float] = []
        # CoSENT's loss for a model that gives every sentence one vector: log(1 + pairs the gold scores order)
        self.ordered_pairs = (sum(1 for a in batch[label] for b in batch[label] if a > b)
                              if label and loss_name == "cosent" else None)

    def __call__(self) -> float:
        import torch
        from scipy.stats import spearmanr

        device = self.model.device
        feats = [{k: v.to(device) if hasattr(v, "to") else v for k, v in f.items()} for f in self.features]
        labels = self.labels.to(device) if self.labels is not None else None
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                embs = [self.model(f)["sentence_embedding"].float() for f in feats]
                loss = float(self.loss.compute_loss_from_embeddings(embs, labels))
        finally:
            self.model.train(was_training)
        if labels is not None and len(embs) == 2:
            cos = torch.nn.functional.cosine_similarity(embs[0], embs[1]).cpu().numpy()
            rho = spearmanr(cos, self.labels.numpy()).statistic if np.ptp(cos) > 1e-6 else 0.0
            self.spearman.append(float(rho) if np.isfinite(rho) else 0.0)
        return loss


class ExponentialSweep(TrainerCallback):
    """Sets every param group's rate to ``start * (end/start) ** (step/(steps-1))`` before each optimizer step
    (notebook 01)."""

    def __init__(self, start: float, end: float, steps: int, beta: float = 0.98, stop_factor: float = 4.0,
                 probe: ProbeLoss | None = None):
        self.start, self.end, self.steps = start, end, steps
        self.beta, self.stop_factor = beta, stop_factor
        self.probe = probe  # when set, the smoothed curve (and the stop) follow the fixed batch's loss
        self.rates: list[float] = []
        self.losses: list[float] = []
        self.probe_losses: list[float] = []
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
        if self.probe is not None:  # the step is done: score the fixed batch with the weights it left
            loss = self.probe()
            self.probe_losses.append(loss)
        self._track(loss, control)

    def _track(self, loss: float, control) -> None:
        """Bias-corrected exponential smoothing (fastai's), and the stop once the curve blows up."""
        if not math.isfinite(loss):
            control.should_training_stop = True
            return
        self._avg = self.beta * self._avg + (1 - self.beta) * loss
        smooth = self._avg / (1 - self.beta ** (len(self.smoothed) + 1))
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
    probe_losses: list[float] = field(default_factory=list)  # the fixed batch's loss after each step ([] without)
    probe_size: int = 0
    probe_spearman: list[float] = field(default_factory=list)  # its Spearman after each step (scored pairs only)
    probe_ordered_pairs: int | None = None  # CoSENT only: pairs of the batch the gold scores order

    @property
    def collapse_loss(self) -> float | None:
        """CoSENT's loss on the probe batch for a collapsed model (every sentence one vector): log(1 + pairs)."""
        return None if self.probe_ordered_pairs is None else math.log1p(self.probe_ordered_pairs)

    @property
    def suggestion(self) -> float:
        """The rate the default rule (``valley``) picks."""
        return self.suggestions[self.rule]

    @property
    def spread(self) -> float:
        """How far apart the rules land, in orders of magnitude: log10(largest / smallest suggestion)."""
        v = list(self.suggestions.values())
        return math.log10(max(v) / min(v))

    def report(self, advice: tuple[float, float] = (2e-5, 5e-5)) -> str:
        """What the sweep suggests, how far apart the rules land, and where the advice sits (notebook 01)."""
        lo, hi = advice
        curve = (f"the loss on a fixed batch of {self.probe_size} pairs after each step" if self.probe_losses
                 else "the smoothed training loss of each step")
        where = lambda r: "inside" if lo <= r <= hi else ("below" if r < lo else "above")  # noqa: E731
        lines = [f"{self.steps} steps from {self.rates[0]:.0e} to {self.rates[-1]:.1e}, curve: {curve}"
                 f"{' (stopped early: the loss blew up)' if self.stopped_early else ''}."]
        lines += [f"  {k:7s} {v:.1e}  ({where(v)} the advised {lo:.0e} to {hi:.0e})" for k, v in self.suggestions.items()]
        agree = "within one order of magnitude" if self.spread <= 1 else "more than one order of magnitude apart"
        lines.append(f"The rules land {self.spread:.1f} orders of magnitude apart: {agree}.")
        if self.probe_spearman:
            rho = self.probe_spearman
            at = lambda r: rho[int(np.argmin(np.abs(np.log(self.rates) - math.log(r))))]  # noqa: E731
            best = int(np.argmax(rho))
            lines.append(f"Spearman on the fixed batch: {rho[0]:.3f} at the start, highest {rho[best]:.3f} once the "
                         f"rate reached {self.rates[best]:.1e}; at the valley's rate {at(self.suggestion):.3f}, "
                         f"at the end {rho[-1]:.3f}.")
        if self.collapse_loss is not None:
            lines.append(f"A collapsed model (every sentence one vector) scores log(1 + {self.probe_ordered_pairs:,}) = "
                         f"{self.collapse_loss:.2f} on this batch; the curve started at {self.smoothed[0]:.2f} and its "
                         f"lowest point is {min(self.smoothed):.2f}.")
        return "\n".join(lines)


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
                  model=None, data=None, progress: bool = True, stop_factor: float = 4.0, probe: int = 64,
                  probe_beta: float = 0.6) -> RangeTestResult:
    """Sweep the rate from ``start`` to ``end`` over ``steps`` optimizer steps of ``cfg``'s task and loss
    (notebook 01).

    ``model`` (loaded if None) gets its weights back afterwards. ``data`` is a
    prepared task to reuse. ``probe``: the size of the fixed batch (the first pairs of the
    validation split) whose loss makes the curve (0: the per-step training loss, smoothed
    as fastai does); ``probe_beta``: its smoothing.
    """
    if not 0 < start < end:
        raise ValueError(f"Need 0 < start < end, got start={start:g}, end={end:g}.")
    if steps < 20:
        raise ValueError(f"steps={steps} is too few for a sweep; use at least 20 (a few hundred is typical).")
    cfg = (cfg or TrainConfig())
    if model is None:
        model = load_model(cfg.model, device=cfg.device, max_seq_length=cfg.max_seq_length)
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    checker = None
    if probe:
        data = data if data is not None else prepare_task(cfg)
        batch = data.dev.select(range(min(probe, len(data.dev))))
        checker = ProbeLoss(model, cfg.loss or default_loss(data.columns), batch, scale=cfg.loss_scale)
    sweep = ExponentialSweep(start, end, steps, stop_factor=stop_factor,
                             beta=probe_beta if checker else 0.98, probe=checker)
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
                           stopped_early=n < steps, steps=n, wall_time=run.wall_time,
                           probe_losses=sweep.probe_losses[:n], probe_size=checker.size if checker else 0,
                           probe_spearman=checker.spearman[:n] if checker else [],
                           probe_ordered_pairs=checker.ordered_pairs if checker else None)
