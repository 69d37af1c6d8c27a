"""Profile the recipe's data before anything trains: rows, scores, lengths, truncation, duplicates and leakage
(notebook 07; :class:`helpers.recipe.Recipe` shows the table and its warnings)."""
from __future__ import annotations

from .tasks import Task, texts


def profile(task: Task, tokenizer=None, max_seq_length: int = 128):
    """One row per split: rows, columns, scores, tokens per text, share truncated, duplicates, overlap with train
    (notebook 07)."""
    import numpy as np
    import pandas as pd

    train_rows = {tuple(r[c] for c in task.train.column_names if c != "score") for r in task.train}
    rows = []
    for split, ds in (("train", task.train), ("dev", task.dev), ("test", _test_rows(task))):
        if ds is None:
            continue
        split_texts = texts(ds)
        lengths = np.array([len(ids) for ids in tokenizer(split_texts)["input_ids"]] if tokenizer is not None
                           else [len(t.split()) for t in split_texts])
        keys = [tuple(r[c] for c in ds.column_names if c != "score") for r in ds]
        row = {"split": split, "rows": len(ds), "columns": ", ".join(ds.column_names)}
        if "score" in ds.column_names:
            sc = np.array(ds["score"], dtype=float)
            row.update({"score min": sc.min(), "score mean": sc.mean(), "score max": sc.max()})
        row.update({"tokens mean" if tokenizer is not None else "words mean": lengths.mean(),
                    "tokens max" if tokenizer is not None else "words max": int(lengths.max()),
                    f"truncated at {max_seq_length}": float((lengths > max_seq_length).mean()) if tokenizer is not None
                    else float("nan"),
                    "duplicate rows": len(keys) - len(set(keys)),
                    "rows also in train": 0 if split == "train" else sum(k in train_rows for k in keys)})
        rows.append(row)
    return pd.DataFrame(rows).set_index("split")


def _test_rows(task: Task):
    """The test split as a Dataset when the task kept it (files and STS-B), else None."""
    ev = task.test_evaluator
    if hasattr(ev, "sentences1"):
        from datasets import Dataset

        return Dataset.from_dict({"sentence1": list(ev.sentences1), "sentence2": list(ev.sentences2),
                                  "score": [float(s) for s in ev.scores]})
    return None


def profile_warnings(table, max_seq_length: int) -> list[str]:
    """Plain-language warnings from a :func:`profile` table (truncation, duplicates, leakage, few rows)
    (notebook 07)."""
    notes = []
    col = f"truncated at {max_seq_length}"
    for split, row in table.iterrows():  # a table of numbers only gives each row as floats: counts are cast back
        if col in row and row[col] == row[col] and row[col] > 0.05:
            notes.append(f"{split}: {row[col]:.0%} of the texts are longer than {max_seq_length} tokens and get "
                         "truncated; raise max_seq_length if the end of a text matters.")
        if row["duplicate rows"]:
            notes.append(f"{split}: {int(row['duplicate rows'])} duplicate rows.")
        if split != "train" and row["rows also in train"]:
            notes.append(f"{split}: {int(row['rows also in train'])} rows also appear in the training data; "
                         "their scores overstate how well the model generalises.")
    if table.loc["train", "rows"] < 100:
        notes.append(f"train: only {table.loc['train', 'rows']} rows; expect noisy results and keep the rate low.")
    return notes
