"""Losses by task, and which data columns each needs (notebooks 03 and 05).

Graded similarity (pairs with a score): CoSENT (the library's recommendation),
CosineSimilarityLoss, AnglE. Retrieval (anchor, positive[, negative]):
MultipleNegativesRankingLoss and its cached (GradCache) variant, which gets
the negatives of the whole batch at the memory of a mini-batch.
"""
from __future__ import annotations

from sentence_transformers.sentence_transformer import losses as st_losses

PAIR_LOSSES = {"cosent": "CoSENTLoss", "cosine": "CosineSimilarityLoss", "angle": "AnglELoss"}
INBATCH_LOSSES = {"mnrl": "MultipleNegativesRankingLoss", "cached_mnrl": "CachedMultipleNegativesRankingLoss"}
LOSSES = {**PAIR_LOSSES, **INBATCH_LOSSES}


def default_loss(columns) -> str:
    """CoSENT for scored pairs, MultipleNegativesRankingLoss for (anchor, positive[, negative]) (notebook 05)."""
    return "cosent" if "score" in columns else "mnrl"


def check_loss_fits(name: str, columns) -> None:
    """Raise ``ValueError`` when loss ``name`` cannot train on data with these ``columns`` (notebook 05)."""
    cols = set(columns)
    if name not in LOSSES:
        raise ValueError(f"Unknown loss {name!r}; use one of {', '.join(LOSSES)}.")
    if name in PAIR_LOSSES and not {"sentence1", "sentence2", "score"} <= cols:
        raise ValueError(
            f"Loss {name!r} needs scored pairs (sentence1, sentence2, score) but the data has columns {sorted(cols)}; "
            "use loss='mnrl' for (anchor, positive[, negative]) data."
        )
    if name in INBATCH_LOSSES and not {"anchor", "positive"} <= cols:
        raise ValueError(
            f"Loss {name!r} needs (anchor, positive[, negative]) but the data has columns {sorted(cols)}; "
            "use loss='cosent' for scored pairs."
        )


def is_inbatch(name: str) -> bool:
    """True for losses whose negatives are the other examples of the batch (notebook 05)."""
    return name in INBATCH_LOSSES


def make_loss(name: str, model, scale: float | None = None, mini_batch_size: int = 32):
    """Build loss ``name`` for ``model`` (``scale`` is the in-batch/CoSENT temperature inverse) (notebook 05)."""
    if name not in LOSSES:
        raise ValueError(f"Unknown loss {name!r}; use one of {', '.join(LOSSES)}.")
    cls = getattr(st_losses, LOSSES[name])
    kwargs = {}
    if scale is not None and name != "cosine":
        kwargs["scale"] = scale
    if name == "cached_mnrl":
        kwargs["mini_batch_size"] = mini_batch_size
        kwargs["show_progress_bar"] = False
    return cls(model, **kwargs)
