"""Batch size and its companions: the rate-scaling rules and the effective batch (notebook 03)."""
from __future__ import annotations

import math

SCALING_RULES = ("none", "linear", "sqrt")


def effective_batch(batch_size: int, grad_accum: int = 1, world_size: int = 1) -> int:
    """Examples per optimizer step: per-device batch x accumulation steps x processes."""
    return batch_size * grad_accum * world_size


def scaled_learning_rate(
    learning_rate: float, batch_size: int, base_batch_size: int, rule: str = "none", grad_accum: int = 1
) -> float:
    """The rate for ``batch_size x grad_accum`` when ``learning_rate`` was chosen at ``base_batch_size``.

    ``linear``: double the batch, double the rate (Goyal et al., shown for SGD);
    ``sqrt``: double the batch, x1.41 (derived for Adam, Malladi et al. 2022);
    ``none``: keep the rate.
    """
    if rule not in SCALING_RULES:
        raise ValueError(f"Unknown rate-scaling rule {rule!r}; use one of {', '.join(SCALING_RULES)}.")
    k = effective_batch(batch_size, grad_accum) / base_batch_size
    if rule == "linear":
        return learning_rate * k
    if rule == "sqrt":
        return learning_rate * math.sqrt(k)
    return learning_rate
