"""Evaluators for the workshop's tasks, on the library's own classes.

STS: ``EmbeddingSimilarityEvaluator`` (cosine Spearman). Retrieval:
``InformationRetrievalEvaluator`` (nDCG@10). Used by the training runner for
validation and test scores, and by notebooks to score a model directly.
"""
from __future__ import annotations

from sentence_transformers.sentence_transformer.evaluation import (
    EmbeddingSimilarityEvaluator,
    InformationRetrievalEvaluator,
)

STS_METRIC = "spearman_cosine"
IR_METRIC = "cosine_ndcg@10"


def sts_evaluator(ds, name: str, batch_size: int = 64) -> EmbeddingSimilarityEvaluator:
    """Cosine-Spearman evaluator on a Dataset of sentence1, sentence2, score (notebook 00; used by all)."""
    return EmbeddingSimilarityEvaluator(
        list(ds["sentence1"]), list(ds["sentence2"]), list(ds["score"]), name=name, batch_size=batch_size,
        main_similarity="cosine", write_csv=False,
    )


def ir_evaluator(ir: dict, name: str, batch_size: int = 64) -> InformationRetrievalEvaluator:
    """nDCG@10 evaluator on a retrieval dict (queries, corpus, relevant) (notebook 00; used by all)."""
    return InformationRetrievalEvaluator(
        ir["queries"], ir["corpus"], ir["relevant"], name=name, batch_size=batch_size, show_progress_bar=False,
        mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[1, 10], precision_recall_at_k=[10], map_at_k=[100],
        write_csv=False,
    )


def metric_key(evaluator) -> str:
    """Key of the evaluator's main metric in its output, e.g. ``sts-dev_spearman_cosine``
    (notebook 00; used by all)."""
    base = STS_METRIC if isinstance(evaluator, EmbeddingSimilarityEvaluator) else IR_METRIC
    return f"{evaluator.name}_{base}"


def score(model, evaluator) -> float:
    """The evaluator's main metric for ``model`` (e.g. STS-B test Spearman in notebook 00)."""
    return float(evaluator(model)[metric_key(evaluator)])
