"""Learning-rate schedules, built from the very scheduler objects the trainer uses.

The training runner (``helpers.training``) hands every schedule to the
trainer through :func:`build_scheduler`, and :func:`lr_curve` runs the same
function on a throw-away optimizer, so the curves drawn in notebook 01 are the
rates training really used. Named schedules come from
``transformers.get_scheduler``; OneCycleLR comes from PyTorch.
"""
from __future__ import annotations

import math

import torch

SCHEDULES = ("constant", "linear", "cosine", "cosine_floor", "onecycle", "wsd")
SCHEDULE_LABELS = {
    "constant": "constant",
    "linear": "linear decay",
    "cosine": "cosine decay to 0",
    "cosine_floor": "cosine decay to a floor",
    "onecycle": "OneCycleLR",
    "wsd": "warm-up, stable, decay",
}


def warmup_steps(total_steps: int, warmup_fraction: float) -> int:
    """Warm-up length in optimizer steps: ``ceil(total * fraction)`` as an int (notebook 01).

    Always an int: in transformers 5 a float ``warmup_steps`` below 1 means a
    ratio and ``1.0`` means one step (docs/references.md, "Warm-up: steps or a fraction").
    """
    return int(math.ceil(total_steps * warmup_fraction)) if warmup_fraction > 0 else 0


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: str,
    total_steps: int,
    warmup_fraction: float = 0.1,
    floor: float | None = None,
    decay_fraction: float = 0.2,
):
    """A scheduler for ``optimizer`` over ``total_steps`` optimizer steps (notebook 01).

    ``schedule`` is one of :data:`SCHEDULES`:

    * ``constant``: flat (with a linear warm-up when ``warmup_fraction > 0``);
    * ``linear`` / ``cosine``: warm-up, then decay to 0;
    * ``cosine_floor``: warm-up, then cosine decay down to ``floor`` (absolute rate);
    * ``onecycle``: PyTorch ``OneCycleLR`` peaking at each group's rate after
      ``warmup_fraction`` of the steps (0.3, PyTorch's default, when 0);
    * ``wsd``: warm-up, a stable plateau, then linear decay over the last
      ``decay_fraction`` of the steps to ``floor`` (or 0).
    """
    from transformers import get_scheduler

    if schedule not in SCHEDULES:
        raise ValueError(f"Unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}.")
    total_steps = max(1, int(total_steps))
    warm = warmup_steps(total_steps, warmup_fraction)
    peak = optimizer.defaults["lr"]
    if schedule == "constant":
        name = "constant_with_warmup" if warm else "constant"
        return get_scheduler(name, optimizer, num_warmup_steps=warm, num_training_steps=total_steps)
    if schedule in ("linear", "cosine"):
        return get_scheduler(schedule, optimizer, num_warmup_steps=warm, num_training_steps=total_steps)
    if schedule == "cosine_floor":
        if floor is None:
            raise ValueError("Schedule 'cosine_floor' needs a floor, e.g. floor=1e-6.")
        return get_scheduler(
            "cosine_with_min_lr",
            optimizer,
            num_warmup_steps=warm,
            num_training_steps=total_steps,
            scheduler_specific_kwargs={"min_lr": floor},
        )
    if schedule == "wsd":
        decay = max(1, int(math.ceil(total_steps * decay_fraction)))
        stable = max(0, total_steps - warm - decay)
        import warnings

        with warnings.catch_warnings():  # transformers warns that num_stable_steps wins; it is what we want
            warnings.simplefilter("ignore", UserWarning)
            return get_scheduler(
            "warmup_stable_decay",
            optimizer,
            num_warmup_steps=warm,
            num_training_steps=total_steps,
            scheduler_specific_kwargs={
                "num_stable_steps": stable,
                "num_decay_steps": decay,
                "min_lr_ratio": (floor or 0.0) / peak,
            },
            )
    # onecycle
    if total_steps < 2:  # OneCycleLR needs room for a rise and a fall
        return get_scheduler("constant", optimizer)
    pct = warmup_fraction if warmup_fraction > 0 else 0.3
    pct = max(pct, 1.5 / total_steps)  # at least one full step of warm-up (PyTorch divides by it)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[g["lr"] for g in optimizer.param_groups],
        total_steps=total_steps,
        pct_start=min(pct, 0.99),
        anneal_strategy="cos",
        cycle_momentum=False,
    )


def lr_curve(
    schedule: str,
    peak: float,
    total_steps: int,
    warmup_fraction: float = 0.1,
    floor: float | None = None,
    decay_fraction: float = 0.2,
) -> list[float]:
    """The rate at every optimizer step (read before each step, as the trainer's recorder does) (notebook 01)."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=peak)
    sched = build_scheduler(opt, schedule, total_steps, warmup_fraction, floor, decay_fraction)
    rates = []
    for _ in range(max(1, int(total_steps))):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


def named_curves(peak: float = 2e-5, total_steps: int = 200, warmup_fraction: float = 0.1,
                 floor: float = 1e-6) -> dict[str, list[float]]:
    """The syllabus's schedules, labelled, over the same steps (notebook 01's first figure)."""
    return {
        "constant": lr_curve("constant", peak, total_steps, 0.0),
        f"constant + {warmup_fraction:.0%} warm-up": lr_curve("constant", peak, total_steps, warmup_fraction),
        f"linear, {warmup_fraction:.0%} warm-up": lr_curve("linear", peak, total_steps, warmup_fraction),
        "cosine": lr_curve("cosine", peak, total_steps, warmup_fraction),
        f"cosine to {floor:.0e}": lr_curve("cosine_floor", peak, total_steps, warmup_fraction, floor=floor),
        "OneCycleLR": lr_curve("onecycle", peak, total_steps, warmup_fraction),
        "warm-up, stable, decay": lr_curve("wsd", peak, total_steps, warmup_fraction, floor=floor),
    }


def curve_table(curves: dict[str, list[float]], steps=(1, 11, 21, 50, 100, 150, 200)):
    """The rate of each curve at a few steps (1-based), as a table of ``2.00e-05`` strings (notebook 01)."""
    import pandas as pd

    return pd.DataFrame({name: [f"{rates[s - 1]:.2e}" for s in steps if s <= len(rates)] for name, rates in curves.items()},
                        index=pd.Index([s for s in steps], name="step")).T
