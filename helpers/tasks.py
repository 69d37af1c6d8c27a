"""A task bundles training data, validation data and evaluators (used by the training runner).

``stsb`` (graded similarity, Spearman), ``codesearch`` (stdlib docstring ->
code retrieval, nDCG@10), ``snli`` (premise -> entailed hypothesis retrieval,
nDCG@10), or the path of the learner's own CSV/TSV/JSONL file.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from datasets import Dataset

from . import data as D
from .codesearch import load_codesearch
from .evaluation import ir_evaluator, metric_key, sts_evaluator

TASKS = ("stsb", "codesearch", "snli")


@dataclass
class Task:
    """Everything a training run needs about its data (notebook 00; used by all)."""

    name: str
    train: Dataset  # training examples (columns decide the losses that fit)
    dev: Dataset  # validation examples, same columns, for the validation loss
    dev_evaluator: object  # validation metric during training
    test_evaluator: object  # final score
    metric: str  # human name of the main metric

    @property
    def dev_metric_key(self) -> str:
        return metric_key(self.dev_evaluator)

    @property
    def test_metric_key(self) -> str:
        return metric_key(self.test_evaluator)

    @property
    def columns(self) -> list[str]:
        return list(self.train.column_names)


def _ir_pairs(ir: dict) -> Dataset:
    """(anchor, positive) pairs from a retrieval dict (its first relevant document per query)."""
    anchors, positives = [], []
    for qid, q in ir["queries"].items():
        rel = sorted(ir["relevant"].get(qid, ()))
        if rel:
            anchors.append(q)
            positives.append(ir["corpus"][rel[0]])
    return Dataset.from_dict({"anchor": anchors, "positive": positives})


def _hash_bucket(text: str) -> int:
    return int(hashlib.md5(text.encode()).hexdigest(), 16) % 100


@lru_cache(maxsize=8)
def _snli_parts(seed: int) -> tuple:
    rows = D._snli_rows("dev")
    train_rows = [r for r in rows if _hash_bucket(r[0]) >= 10]
    val_rows = [r for r in rows if _hash_bucket(r[0]) < 10]
    return train_rows, val_rows


def load_task(
    name: str,
    train_size: int | None = None,
    dev_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
    score_range: tuple[float, float] = (0.0, 1.0),
) -> Task:
    """Build task ``name`` with seeded subsets (``None`` = all) (notebook 00; used by all; directly in notebook 03).

    For retrieval tasks ``dev_size``/``test_size`` count queries. A file path
    is split 80/10/10 (seeded) into train, validation and test.
    """
    if name == "stsb":
        dev = D.load_stsb("dev", dev_size, seed)
        test = D.load_stsb("test", test_size, seed)
        return Task("stsb", D.load_stsb("train", train_size, seed), dev, sts_evaluator(dev, "sts-dev"),
                    sts_evaluator(test, "sts-test"), "Spearman")
    if name == "codesearch":
        cs = load_codesearch(train_size, None, seed)
        dev_ir = _cap_ir(cs["dev"], dev_size, seed)
        test_ir = _cap_ir(cs["test"], test_size, seed)
        return Task("codesearch", cs["train"], _ir_pairs(dev_ir), ir_evaluator(dev_ir, "code-dev"),
                    ir_evaluator(test_ir, "code-test"), "nDCG@10")
    if name == "snli":
        train_rows, val_rows = _snli_parts(seed)
        train = D.subset(Dataset.from_dict(D.snli_triplets(train_rows)), train_size, seed)
        dev_ir = D.snli_retrieval(val_rows, dev_size, seed)
        test_ir = D.load_snli_retrieval("test", test_size, seed)
        return Task("snli", train, _ir_pairs(dev_ir), ir_evaluator(dev_ir, "snli-dev"),
                    ir_evaluator(test_ir, "snli-test"), "nDCG@10")
    path = Path(name)
    if path.suffix.lower() in {".csv", ".tsv", ".jsonl", ".json"} or path.exists():
        return file_task(path, train_size, seed, score_range)
    raise ValueError(f"Unknown task {name!r}: use one of {', '.join(TASKS)} or the path of a .csv/.tsv/.jsonl file.")


def _cap_ir(ir: dict, n: int | None, seed: int) -> dict:
    if n is None or n >= len(ir["queries"]):
        return ir
    import random

    qids = sorted(random.Random(seed).sample(sorted(ir["queries"]), n))
    keep_docs = set().union(*(ir["relevant"][q] for q in qids))
    return {
        "queries": {q: ir["queries"][q] for q in qids},
        "corpus": {c: t for c, t in ir["corpus"].items() if c in keep_docs},
        "relevant": {q: ir["relevant"][q] for q in qids},
    }


def file_task(path, train_size: int | None = None, seed: int = 0, score_range=(0.0, 1.0)) -> Task:
    """A task from the learner's own file, split 80/10/10 (at least one validation and test row) (notebook 07)."""
    ds = D.load_pairs_file(path, score_range=score_range).shuffle(seed=seed)
    n = len(ds)
    if n < 10:
        raise D.DataError(path, None, f"only {n} rows; need at least 10 to split into train, validation and test")
    n_eval = max(1, n // 10)
    test, dev, train = ds.select(range(n_eval)), ds.select(range(n_eval, 2 * n_eval)), ds.select(range(2 * n_eval, n))
    train = D.subset(train, train_size, seed, strict=True)
    if "score" in ds.column_names:
        return Task(str(path), train, dev, sts_evaluator(dev, "file-dev"), sts_evaluator(test, "file-test"), "Spearman")

    def ir(part: Dataset) -> dict:
        corpus_ids: dict[str, str] = {}
        cols = ["positive"] + (["negative"] if "negative" in part.column_names else [])
        for c in cols:
            for t in part[c]:
                corpus_ids.setdefault(t, f"c{len(corpus_ids)}")
        queries = {f"q{i}": a for i, a in enumerate(part["anchor"])}
        relevant = {f"q{i}": {corpus_ids[p]} for i, p in enumerate(part["positive"])}
        return {"queries": queries, "corpus": {v: k for k, v in corpus_ids.items()}, "relevant": relevant}

    return Task(str(path), train, dev, ir_evaluator(ir(dev), "file-dev"), ir_evaluator(ir(test), "file-test"), "nDCG@10")


def texts(ds) -> list[str]:
    """Every text of a split, column by column (scores left out): what the tokenizer sees (notebook 07's profile)."""
    return [t for c in ds.column_names if c != "score" for t in ds[c]]
