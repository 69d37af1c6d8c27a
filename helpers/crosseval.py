"""One model scored on every task, so the cost of training for the wrong task shows (notebook 05).

Three tasks, each prepared once and shared by every run (the runs only differ
in the loss and the training data): graded similarity (STS-B test, cosine
Spearman), SNLI retrieval (premise -> its entailed hypothesis, nDCG@10) and
the standard-library code search (docstring summary -> function, nDCG@10).
Every trained model is scored on all three test sets, the untrained model too.

The SNLI test set here is small on purpose: the chosen premises, and as the
corpus every hypothesis written for them (the entailed one to find, the
neutral and contradicting ones as hard distractors). The task's full corpus
(all 9,800 test hypotheses) would cost more to encode than a short run costs
to train on a CPU.
"""
from __future__ import annotations

import random
import time
from dataclasses import replace

from datasets import Dataset

from . import data as D
from .config import get_scale
from .evaluation import ir_evaluator, score, sts_evaluator
from .experiments import GridResult, run_grid
from .models import load_model
from .results import mean_sd
from .tasks import Task, load_task

EVAL_TASKS = ("stsb", "snli", "codesearch")
TASK_LABELS = {"stsb": "STS-B (Spearman)", "snli": "SNLI retrieval (nDCG@10)",
               "codesearch": "code search (nDCG@10)"}


def snli_test_ir(n_queries: int | None = None, seed: int = 0) -> dict:
    """SNLI test retrieval on ``n_queries`` seeded premises, the corpus being only their own hypotheses
    (notebook 05)."""
    rows = D._snli_rows("test")
    premises = sorted({p for p, _, label in rows if label == "entailment"})
    if n_queries is not None and n_queries < len(premises):
        premises = random.Random(seed).sample(premises, n_queries)
    chosen = set(premises)
    return D.snli_retrieval([r for r in rows if r[0] in chosen])


def prepare_tasks(train_size: int | None = None, eval_size: int | None = None, code_train_size: int | None = None,
                  scale: str | None = None, seed: int = 0) -> dict[str, Task]:
    """The three tasks with small evaluation sets from the scale (prepared once, reused by every run) (notebook 05).

    ``train_size``: STS-B pairs and SNLI triplets to train on (default: the
    scale's ``sweep_train_size``); ``code_train_size``: code-search pairs
    (default: the same); ``eval_size``: STS-B test pairs (default
    ``sweep_test_size``) and retrieval queries (default ``retrieval_test_queries``).
    """
    s = get_scale(scale)
    n_train = s.sweep_train_size if train_size is None else train_size
    n_code = n_train if code_train_size is None else code_train_size
    n_sts = s.sweep_test_size if eval_size is None else eval_size
    n_q = s.retrieval_test_queries if eval_size is None else eval_size
    n_dev = s.sweep_dev_size if s.sweep_dev_size is not None else s.dev_size
    stsb = load_task("stsb", n_train, n_dev, n_sts, seed)
    code = load_task("codesearch", n_code, n_q, n_q, seed)
    snli = load_task("snli", n_train, n_q, n_q, seed)
    snli = replace(snli, test_evaluator=ir_evaluator(snli_test_ir(n_q, seed), "snli-test"))
    return {"stsb": stsb, "snli": snli, "codesearch": code}


def without_negatives(task: Task) -> Task:
    """The same task with the hard-negative column dropped: (anchor, positive) pairs, in-batch negatives only
    (notebook 05)."""
    if "negative" not in task.train.column_names:
        return task
    return replace(task, name=f"{task.name} (no hard negatives)", train=task.train.remove_columns("negative"))


def other_negatives(task: Task, seed: int = 0) -> Task:
    """(anchor, positive) pairs with a ``negative`` column: each anchor gets another row's positive
    (a seeded shuffle with no row left on its own), so a pair loss can train on the same texts as
    MultipleNegativesRankingLoss (notebook 05: code search, CoSENT against MNRL).

    These negatives are random, not hard: the same kind MNRL draws from its batch.
    """
    tr = task.train
    if "negative" in tr.column_names:
        return task
    n = len(tr)
    if n < 2:
        raise ValueError(f"other_negatives needs at least 2 training pairs; {task.name} has {n}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    partner = {order[i]: order[(i + 1) % n] for i in range(n)}  # a cycle: nobody is paired with itself
    positives = list(tr["positive"])
    train = Dataset.from_dict({**{c: list(tr[c]) for c in tr.column_names},
                               "negative": [positives[partner[i]] for i in range(n)]})
    return replace(task, name=f"{task.name} (+ other rows' positives)", train=train)


def scored_pairs(task: Task, seed: int = 0) -> Task:
    """Triplets as scored pairs for CoSENT / CosineSimilarityLoss: (anchor, positive, 1.0) and (anchor, negative, 0.0)
    (notebook 05).

    The same texts as the triplets, so a pair loss and MultipleNegativesRankingLoss
    can be compared on the same data. The validation pairs pair each anchor with
    its positive (1.0) and with another anchor's positive (0.0).
    """
    tr = task.train
    if "negative" not in tr.column_names:
        raise ValueError("scored_pairs needs (anchor, positive, negative) triplets")
    s1 = list(tr["anchor"]) * 2
    s2 = list(tr["positive"]) + list(tr["negative"])
    scores = [1.0] * len(tr) + [0.0] * len(tr)
    train = Dataset.from_dict({"sentence1": s1, "sentence2": s2, "score": scores}).shuffle(seed=seed)
    a, p = list(task.dev["anchor"]), list(task.dev["positive"])
    other = p[1:] + p[:1]
    dev = Dataset.from_dict({"sentence1": a + a, "sentence2": p + other, "score": [1.0] * len(a) + [0.0] * len(a)})
    return replace(task, name=f"{task.name} (scored pairs)", train=train, dev=dev,
                   dev_evaluator=sts_evaluator(dev, f"{task.name}-pairs-dev"))


def evaluate_all(model, tasks: dict[str, Task], max_seq_length: int | None = None) -> dict[str, float]:
    """The model's test score on every task (``{task: score}``), all encoded at one ``max_seq_length``
    (notebook 05)."""
    old = model.max_seq_length
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    try:
        return {name: score(model, t.test_evaluator) for name, t in tasks.items()}
    finally:
        model.max_seq_length = old


def untuned_row(tasks: dict[str, Task], max_seq_length: int | None = None, model=None) -> dict:
    """The untrained model's scores on every task (one row, the baseline of every comparison) (notebook 05)."""
    model = model if model is not None else load_model()
    start = time.perf_counter()
    row = evaluate_all(model, tasks, max_seq_length)
    row["eval_s"] = time.perf_counter() - start
    return row


def cross_grid(arms: dict, seeds, tasks: dict[str, Task], max_seq_length: int | None = None,
               progress: bool = True) -> GridResult:
    """Train every arm with every seed, score each model on every task; ``{arm: [row per seed]}`` (notebook 05).

    ``arms``: ``{name: (TrainConfig, Task to train on)}``. A row holds the score
    per task, ``seed``, ``steps``, ``wall_s`` (training), ``eval_s`` and
    ``train_loss`` (the last logged training loss). Runs through
    :func:`helpers.run_grid`, so models are dropped after scoring and the
    returned :class:`helpers.experiments.GridResult` carries the ``wall_time``.
    """
    def row(r, seed):
        t0 = time.perf_counter()
        out = evaluate_all(r.model, tasks, max_seq_length)
        out.update(seed=seed, steps=r.steps, wall_s=r.wall_time, eval_s=time.perf_counter() - t0,
                   train_loss=r.train_loss[-1]["loss"] if r.train_loss else float("nan"), stop=r.stop_reason)
        return out

    no_test = {name: (cfg.replace(final_test=False), task) for name, (cfg, task) in arms.items()}
    return run_grid(no_test, seeds, progress=progress, record=row)


def matrix(rows_by_arm: dict[str, list[dict]], tasks=EVAL_TASKS, baseline: dict | None = None,
           delta: bool = False):
    """Mean score per arm (rows) and task (columns) as numbers; ``delta=True`` subtracts the untrained model
    (notebook 05)."""
    import numpy as np
    import pandas as pd

    data = {}
    if baseline is not None and not delta:
        data["untuned"] = {t: baseline[t] for t in tasks}
    for arm, rows in rows_by_arm.items():
        data[arm] = {t: float(np.mean([r[t] for r in rows])) - (baseline[t] if delta else 0.0) for t in tasks}
    return pd.DataFrame(data).T[list(tasks)]


def matrix_table(rows_by_arm: dict[str, list[dict]], tasks=EVAL_TASKS, baseline: dict | None = None,
                 own: dict[str, str] | None = None):
    """``mean ± sd (change from untuned)`` per arm and task; ``own`` marks each arm's training task with ``*``
    (notebook 05)."""
    import pandas as pd

    table = {}
    if baseline is not None:
        table["untuned"] = {TASK_LABELS.get(t, t): f"{baseline[t]:.4f}" for t in tasks}
    for arm, rows in rows_by_arm.items():
        cells = {}
        for t in tasks:
            mean, sd = mean_sd(r[t] for r in rows)
            cell = f"{mean:.4f} ± {sd:.4f}"
            if baseline is not None:
                cell += f" ({mean - baseline[t]:+.4f})"
            if own and own.get(arm) == t:
                cell += " *"
            cells[TASK_LABELS.get(t, t)] = cell
        table[arm] = cells
    return pd.DataFrame(table).T


def arm_cost_table(rows_by_arm: dict[str, list[dict]]):
    """Training steps, training and evaluation seconds per arm (mean over seeds) (notebook 05)."""
    import numpy as np
    import pandas as pd

    return pd.DataFrame({arm: {"seeds": len(rows), "steps": int(np.mean([r["steps"] for r in rows])),
                               "train s": round(float(np.mean([r["wall_s"] for r in rows])), 1),
                               "eval s": round(float(np.mean([r["eval_s"] for r in rows])), 1)}
                         for arm, rows in rows_by_arm.items()}).T
