"""Gradient accumulation against a true big batch and the cached in-batch loss, step by step (notebook 03).

One optimizer step's loss and gradient, computed three ways on the same
examples, the same weights and dropout switched off, so any difference comes
from the loss alone:

* **true batch**: all ``batch`` examples in one forward and backward pass;
* **accumulated**: ``batch / micro`` micro-batches, each loss divided by the
  number of micro-batches and the gradients summed, as the trainer does with
  ``gradient_accumulation_steps``;
* **cached**: CachedMultipleNegativesRankingLoss (GradCache) with
  ``mini_batch_size=micro``: embeddings of the whole batch first, then the
  gradient mini-batch by mini-batch.

For a per-example loss (CosineSimilarityLoss: a mean of independent squared
errors) accumulation gives the true batch's gradient. For an in-batch loss
(MultipleNegativesRankingLoss) each micro-batch scores its anchors only
against its own ``micro - 1`` negatives: a different, easier loss. The cached
loss scores against all ``batch - 1`` and gives the true batch's gradient at
the activation memory of a mini-batch.
"""
from __future__ import annotations

import math

import numpy as np

from .losses import is_inbatch, make_loss
from .measure import ActivationMemory

WAYS = ("true batch", "accumulated", "cached")


def _inputs(model, rows: dict, columns: list[str]):
    """Tokenised features (one dict per text column) and labels, on the model's device, like the trainer's collator."""
    import torch

    feats = []
    for c in columns:
        f = model.preprocess(list(rows[c]))
        feats.append({k: v.to(model.device) if hasattr(v, "to") else v for k, v in f.items()})
    labels = torch.tensor(rows["score"], dtype=torch.float, device=model.device) if "score" in rows else None
    return feats, labels


def _rows(data, start: int, end: int) -> dict:
    part = data.select(range(start, end))
    return {c: part[c] for c in part.column_names}


def step_gradient(model, loss, data, micro: int | None = None) -> dict:
    """Loss, gradient (one flat vector over the trainable weights) and activation memory of one step on ``data``
    (notebook 03).

    ``micro``: split ``data`` into micro-batches of this size and accumulate
    (each loss divided by the number of micro-batches, as the trainer does);
    ``None``: one pass over everything. ``loss`` is a built loss module.
    """
    import torch

    n = len(data)
    micro = micro or n
    if n % micro:
        raise ValueError(f"The batch of {n} must split into whole micro-batches of {micro}.")
    columns = [c for c in data.column_names if c != "score"]
    params = [p for p in model.parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)
    parts = n // micro
    total = 0.0
    with ActivationMemory(model) as mem:
        for i in range(parts):
            feats, labels = _inputs(model, _rows(data, i * micro, (i + 1) * micro), columns)
            value = loss(feats, labels) / parts
            value.backward()
            total += float(value.detach())
    grad = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().flatten().float().cpu()
                      for p in params])
    model.zero_grad(set_to_none=True)
    return {"loss": total, "grad": grad.numpy(), "activation_mb": mem.peak_mb}


def gradient_agreement(g: np.ndarray, ref: np.ndarray) -> dict:
    """How close gradient ``g`` is to ``ref``: cosine similarity and relative L2 difference (notebook 03)."""
    g, ref = np.asarray(g, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    nr = np.linalg.norm(ref)
    cos = float(g @ ref / (np.linalg.norm(g) * nr)) if nr and np.linalg.norm(g) else float("nan")
    return {"cosine": cos, "rel_diff": float(np.linalg.norm(g - ref) / nr) if nr else float("nan")}


def compare_ways(model, loss_name: str, data, micro: int, scale: float | None = None) -> dict[str, dict]:
    """One step of ``loss_name`` on all of ``data`` (the batch) three ways; see the module docstring (notebook 03).

    Returns ``{way: {loss, grad, activation_mb, negatives, cosine, rel_diff}}``
    where ``cosine`` and ``rel_diff`` compare the way's gradient with the true
    batch's, and ``negatives`` is how many in-batch negatives each anchor is
    scored against (``None`` for per-example losses). The cached way exists
    only for in-batch losses. The model is put in eval mode (no dropout) so
    the ways differ only by the loss; its weights are not changed.
    """
    n = len(data)
    was_training = model.training
    model.eval()
    try:
        out = {"true batch": step_gradient(model, make_loss(loss_name, model, scale=scale), data),
               "accumulated": step_gradient(model, make_loss(loss_name, model, scale=scale), data, micro)}
        if is_inbatch(loss_name):
            cached = make_loss("cached_mnrl", model, scale=scale, mini_batch_size=micro)
            out["cached"] = step_gradient(model, cached, data)
    finally:
        model.train(was_training)
    extra = [c for c in data.column_names if c not in ("anchor", "positive", "score")]
    per_anchor_docs = 1 + len(extra)  # positive plus hard negatives
    negatives = {"true batch": n * per_anchor_docs - 1, "accumulated": micro * per_anchor_docs - 1,
                 "cached": n * per_anchor_docs - 1}
    ref = out["true batch"]["grad"]
    for way, r in out.items():
        r.update(gradient_agreement(r["grad"], ref))
        r["negatives"] = negatives[way] if is_inbatch(loss_name) else None
    return out


def comparison_table(results: dict[str, dict[str, dict]], batch: int, micro: int):
    """A pandas table of :func:`compare_ways` results: ``{loss label: compare_ways(...)}`` -> one row per loss and way
    (notebook 03)."""
    import pandas as pd

    rows = []
    for label, ways in results.items():
        for way, r in ways.items():
            how = {"true batch": f"{batch} at once", "accumulated": f"{batch // micro} x {micro}",
                   "cached": f"cached, mini-batches of {micro}"}[way]
            rows.append({"loss": label, "way": f"{way} ({how})", "loss value": round(r["loss"], 4),
                         "gradient cosine to true batch": round(r["cosine"], 6),
                         "gradient difference (relative)": f"{r['rel_diff']:.1e}",
                         "negatives per anchor": "-" if r["negatives"] is None else r["negatives"],
                         "activation MB": round(r["activation_mb"], 1)})
    return pd.DataFrame(rows).set_index(["loss", "way"])


def chance_loss(negatives: int) -> float:
    """The in-batch loss of a model that cannot tell the positive from ``negatives`` negatives: ln(negatives + 1)
    (notebook 03)."""
    return math.log(negatives + 1)
