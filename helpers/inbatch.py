"""In-batch negatives shown on real data: the scale (temperature) and the no-duplicates sampler (notebook 05).

MultipleNegativesRankingLoss scores each anchor against every positive (and
hard negative) of its batch; the cosine similarities, times ``scale``
(= 1 / temperature, 20 by default), go through a softmax, and the loss is the
cross-entropy of the anchor's own positive. :func:`inbatch_view` computes that
by hand for one batch and checks it against the library's loss.

Duplicates: when two rows of a batch share a text (the same SNLI premise with
two entailed hypotheses), one row's positive is the other's "negative": a
false negative. :func:`duplicate_stats` counts them under the default sampler
and under the library's ``NoDuplicatesBatchSampler``.
"""
from __future__ import annotations

import numpy as np

SCALES = (1.0, 5.0, 20.0, 50.0)


def first_batch(dataset, batch_size: int = 8, seed: int = 0):
    """A seeded batch of ``batch_size`` rows with no repeated text (what the no-duplicates sampler gives)
    (notebook 05)."""
    order = np.random.default_rng(seed).permutation(len(dataset))
    rows, seen = [], set()
    for i in order:
        row = dataset[int(i)]
        texts = {v for v in row.values() if isinstance(v, str)}
        if texts & seen:
            continue
        rows.append(row)
        seen |= texts
        if len(rows) == batch_size:
            break
    return {k: [r[k] for r in rows] for k in dataset.column_names}


def inbatch_view(model, batch: dict, scales=SCALES) -> dict:
    """Similarities, softmax and loss of one batch at several scales, by hand and from the library (notebook 05).

    ``batch``: ``{"anchor": [...], "positive": [...], ["negative": [...]]}``.
    Returns ``sims`` (anchors x candidates: the positives, then the hard
    negatives), and per scale the softmax ``probs``, the hand-computed
    ``loss`` and the library's ``library_loss``.
    """
    import torch
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    cols = [c for c in ("anchor", "positive", "negative") if c in batch]
    with torch.no_grad():
        embs = [model.encode(batch[c], convert_to_tensor=True, show_progress_bar=False) for c in cols]
        a = torch.nn.functional.normalize(embs[0], dim=-1)
        cands = torch.nn.functional.normalize(torch.cat(embs[1:]), dim=-1)
        sims = a @ cands.T
        n = len(batch["anchor"])
        labels = torch.arange(n)
        out = {"texts": batch, "sims": sims.cpu().numpy(), "n": n, "scales": {}}
        for s in scales:
            logits = s * sims
            probs = torch.softmax(logits, dim=1)
            loss = torch.nn.functional.cross_entropy(logits, labels).item()
            lib = MultipleNegativesRankingLoss(model, scale=s).compute_loss_from_embeddings(embs, labels).item()
            out["scales"][s] = {"probs": probs.cpu().numpy(), "loss": loss, "library_loss": lib}
    return out


def scale_table(view: dict):
    """Per scale: temperature, loss (by hand and the library's), the chance loss ln(candidates),
    the mean probability of the right positive, and the share of the negatives' gradient on the hardest one
    (notebook 05).

    The gradient of the loss with respect to a negative's logit is its softmax
    probability, so that share says how much the hardest negative drives learning.
    """
    import pandas as pd

    n = view["n"]
    rows = []
    for s, v in view["scales"].items():
        p = v["probs"]
        right = p[np.arange(n), np.arange(n)]
        neg = p.copy()
        neg[np.arange(n), np.arange(n)] = 0.0
        share = neg.max(axis=1) / np.maximum(neg.sum(axis=1), 1e-12)
        rows.append({"scale": s, "temperature": 1 / s, "loss (by hand)": round(v["loss"], 4),
                     "loss (library)": round(v["library_loss"], 4), "chance loss": round(float(np.log(p.shape[1])), 4),
                     "p(right positive)": round(float(right.mean()), 3),
                     "hardest negative's share of the push": round(float(share.mean()), 3)})
    return pd.DataFrame(rows).set_index("scale")


def _batches(dataset, batch_size: int, sampler: str, seed: int):
    import torch
    from sentence_transformers.base.sampler import DefaultBatchSampler, NoDuplicatesBatchSampler
    from torch.utils.data import RandomSampler

    g = torch.Generator().manual_seed(seed)
    if sampler == "default":
        return list(DefaultBatchSampler(RandomSampler(dataset, generator=g), batch_size=batch_size, drop_last=False,
                                        generator=g, seed=seed))
    if sampler == "no duplicates":
        return list(NoDuplicatesBatchSampler(dataset, batch_size=batch_size, drop_last=False, generator=g, seed=seed))
    raise ValueError(f"sampler must be 'default' or 'no duplicates', got {sampler!r}")


def false_negatives(dataset, batch: list[int]) -> int:
    """In one batch, the in-batch "negatives" that are not negative for MultipleNegativesRankingLoss (notebook 05).

    For each anchor: another row's positive or hard negative with the same text as
    its own positive, or another row with the same anchor (whose positive is then
    a positive of this anchor too).
    """
    rows = [dataset[int(i)] for i in batch]
    count = 0
    for i, a in enumerate(rows):
        for j, b in enumerate(rows):
            if i != j and (b["anchor"] == a["anchor"] or b["positive"] == a["positive"]
                           or b.get("negative", None) == a["positive"]):
                count += 1
    return count


def _overlaps(dataset, batch: list[int]) -> bool:
    texts = [{v for v in dataset[int(i)].values() if isinstance(v, str)} for i in batch]
    return any(texts[i] & texts[j] for i in range(len(texts)) for j in range(i + 1, len(texts)))


def duplicate_stats(dataset, batch_size: int = 32, seed: int = 0, samplers=("default", "no duplicates")):
    """One epoch of batches under each sampler: batches, batches with a repeated text, false in-batch negatives
    (notebooks 03 and 05)."""
    import pandas as pd

    records = dataset.to_list()  # plain dicts: fast to index
    rows = []
    for name in samplers:
        batches = _batches(dataset, batch_size, name, seed)
        rows.append({"sampler": name, "batches": len(batches), "rows": sum(len(b) for b in batches),
                     "batches with a repeated text": sum(_overlaps(records, b) for b in batches),
                     "false negatives in the epoch": sum(false_negatives(records, b) for b in batches)})
    return pd.DataFrame(rows).set_index("sampler")


def repeated_texts(dataset, column: str = "anchor") -> dict:
    """How often texts repeat in a column (a generic SNLI hypothesis such as "A man is outside." recurs)
    (notebook 05)."""
    from collections import Counter

    counts = Counter(dataset[column])
    top = counts.most_common(1)[0] if counts else ("", 0)
    return {"rows": len(dataset), "distinct": len(counts), "rows sharing their text": sum(c for c in counts.values() if c > 1),
            "most repeated": top[1], "example": top[0] if top[1] > 1 else ""}
