"""Data loaders: STS Benchmark, SNLI, and the learner's own pair files.

Used by every notebook (00 measures STS-B, 03 and 05 use SNLI, 07 loads a
user's file). Each loader looks for a local copy in ``$WORKSHOP_DATA_DIR``,
then in the project's ``data/`` folder (nowhere else) and, when the files are
absent, loads the same data set from the Hugging Face hub. ``make data``
(:mod:`helpers.datafetch`) writes the local copy once, for rooms without
internet. Subsets are seeded and deterministic.

Every malformed input raises :class:`DataError` before anything is returned,
with the file, the line and the problem in one message; nothing is half-loaded.
"""
from __future__ import annotations

import csv
import difflib
import io
import json
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

from datasets import Dataset

from .records import DataError, SubsetTooLarge, _parse_score, _read_text, _short, _text_field  # noqa: F401

DATA_ENV = "WORKSHOP_DATA_DIR"
PROJECT_ROOT = Path(__file__).resolve().parent.parent

STSB_FILES = {"train": "sts-train.csv", "dev": "sts-dev.csv", "test": "sts-test.csv"}
STSB_HUB_ID = "sentence-transformers/stsb"
STSB_HUB_SPLITS = {"train": "train", "dev": "validation", "test": "test"}
SNLI_HUB_ID = "stanfordnlp/snli"
SNLI_HUB_SPLITS = {"dev": "validation", "test": "test", "train": "train"}
SNLI_LABELS = {0: "entailment", 1: "neutral", 2: "contradiction"}
# Where each hub data set lives in a local copy (the layout `make data` writes).
LOCAL_LAYOUT = {STSB_HUB_ID: "stsbenchmark/", SNLI_HUB_ID: "snli/"}
FETCH_HINT = (
    "run `make data` (or `python -m helpers.datafetch`) once on a machine with internet, which writes "
    f"stsbenchmark/ and snli/ into the project's data/ folder, or set ${DATA_ENV} to a folder that holds them"
)

PAIR_COLUMNS = ("sentence1", "sentence2", "score")
TRIPLET_COLUMNS = ("anchor", "positive", "negative")


# --------------------------------------------------------------------------- locations


def data_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for local copies, in order: the argument, ``$WORKSHOP_DATA_DIR``, the project's data/.

    Nowhere else: a copy elsewhere is found by pointing ``$WORKSHOP_DATA_DIR`` at it (notebook 00).
    """
    dirs = []
    if data_dir is not None:
        dirs.append(Path(data_dir))
    if os.environ.get(DATA_ENV):
        dirs.append(Path(os.environ[DATA_ENV]))
    dirs.append(PROJECT_ROOT / "data")
    return dirs


def find_local(relative: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """Return the first existing ``<dir>/<relative>`` among :func:`data_dirs`, else ``None``
    (notebook 00; used by all)."""
    for d in data_dirs(data_dir):
        p = d / relative
        if p.exists():
            return p
    return None


def subset(ds: Dataset, size: int | None, seed: int = 0, strict: bool = False) -> Dataset:
    """A seeded random subset of ``size`` rows (the whole set when ``size`` is None) (notebook 00; used by all).

    With ``strict=True`` asking for more rows than exist is an error; otherwise
    the whole (shuffled) set is returned.
    """
    if size is None:
        return ds
    if size < 1:
        raise ValueError(f"Subset size must be at least 1, got {size}.")
    if size > len(ds):
        if strict:
            raise SubsetTooLarge(size, len(ds))
        size = len(ds)
    return ds.shuffle(seed=seed).select(range(size))


# --------------------------------------------------------------------------- STS Benchmark


def parse_stsb_file(path: str | os.PathLike) -> dict[str, list]:
    """Parse an official STS Benchmark file (tab-separated, no header, no quoting) (notebook 00; used by all).

    Columns: genre, file, year, id, score (0-5), sentence1, sentence2; extra
    trailing source columns are ignored. Scores are divided by 5.
    """
    text = _read_text(path)
    cols: dict[str, list] = {"sentence1": [], "sentence2": [], "score": []}
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        if len(fields) < 7:
            raise DataError(path, n, f"expected at least 7 tab-separated fields, found {len(fields)}")
        score = _parse_score(fields[4], path, n, (0.0, 5.0))
        s1, s2 = fields[5].strip(), fields[6].strip()
        for name, s in (("sentence1", s1), ("sentence2", s2)):
            if not s:
                raise DataError(path, n, f"empty {name}")
        cols["sentence1"].append(s1)
        cols["sentence2"].append(s2)
        cols["score"].append(score / 5.0)
    if not cols["score"]:
        raise DataError(path, None, "the file has no rows")
    return cols


def stsb_from_hub_records(records: Iterable[dict], source: str = STSB_HUB_ID) -> dict[str, list]:
    """Turn hub records of ``sentence-transformers/stsb`` (sentence1, sentence2, score in [0, 1]) into columns.

    Sentences are cleaned as in the official files (stripped, no tab or line break inside), so a copy
    written by ``make data`` reads back the same (notebook 00).
    """
    cols: dict[str, list] = {"sentence1": [], "sentence2": [], "score": []}
    for n, rec in enumerate(records, start=1):
        missing = [c for c in PAIR_COLUMNS if c not in rec]
        if missing:
            raise DataError(source, n, f"record lacks {missing}; has {sorted(rec)}")
        for name in ("sentence1", "sentence2"):
            text = _one_line(rec[name])
            if not text:
                raise DataError(source, n, f"empty {name}")
            cols[name].append(text)
        cols["score"].append(_parse_score(rec["score"], source, n, (0.0, 1.0)))
    return cols


def _one_line(value) -> str:
    """A hub text field as one stripped line: tabs and line breaks inside become spaces."""
    return re.sub(r"[\t\r\n]+", " ", str(value).strip())


def load_stsb(
    split: str = "train", size: int | None = None, seed: int = 0, data_dir: str | os.PathLike | None = None
) -> Dataset:
    """STS Benchmark ``split`` (train/dev/test) as a Dataset of sentence1, sentence2, score in [0, 1].

    Local copy first, else the hub's ``sentence-transformers/stsb``. ``size``
    takes a seeded subset. Used by notebooks 00-07.
    """
    if split not in STSB_FILES:
        raise ValueError(f"Unknown STS-B split {split!r}; use one of {sorted(STSB_FILES)}.")
    local = find_local(f"stsbenchmark/{STSB_FILES[split]}", data_dir)
    if local is not None:
        cols = parse_stsb_file(local)
    else:
        cols = stsb_from_hub_records(_hub_records(STSB_HUB_ID, STSB_HUB_SPLITS[split]))
    return subset(Dataset.from_dict(cols), size, seed)


# --------------------------------------------------------------------------- SNLI

_DETOK = [
    (re.compile(r" (n't|'s|'re|'ve|'m|'ll|'d)\b"), r"\1"),
    (re.compile(r" ([.,!?;:%)])"), r"\1"),
    (re.compile(r"([($]) "), r"\1"),
    (re.compile(r"``\s*"), '"'),  # opening quote sticks to the next word
    (re.compile(r"\s*''"), '"'),  # closing quote sticks to the previous word
    (re.compile(r"\s+"), " "),
]


def detokenize(text: str) -> str:
    """Undo SNLI's PTB tokenisation: ``does n't go .`` -> ``doesn't go.`` (notebook 00; used by all).

    The rules are repeated until nothing changes, so ``detokenize(detokenize(t)) == detokenize(t)``:
    the hub's plain text, detokenised once and written by ``make data``, reads back unchanged.
    """
    for _ in range(10):
        before = text
        for pattern, repl in _DETOK:
            text = pattern.sub(repl, text)
        text = text.strip()
        if text == before:
            break
    return text


def snli_rows_from_files(split: str, data_dir: str | os.PathLike | None = None) -> list[tuple[str, str, str]] | None:
    """(premise, hypothesis, label) rows from the local ``snli/{s1,s2,labels}.SPLIT`` files, or None if absent
    (notebook 00; used by all)."""
    paths = [find_local(f"snli/{name}.{split}", data_dir) for name in ("s1", "s2", "labels")]
    if any(p is None for p in paths):
        return None
    texts = [_read_text(p).rstrip("\n").split("\n") for p in paths]
    if len({len(t) for t in texts}) != 1:
        raise DataError(paths[0], None, f"s1/s2/labels have different line counts: {[len(t) for t in texts]}")
    rows = []
    for n, (p, h, label) in enumerate(zip(*texts), start=1):
        label = label.strip()
        if label not in SNLI_LABELS.values():
            raise DataError(paths[2], n, f"unknown label {label!r}; expected one of {sorted(SNLI_LABELS.values())}")
        rows.append((detokenize(p), detokenize(h), label))
    return rows


def snli_rows_from_hub_records(records: Iterable[dict], source: str = SNLI_HUB_ID) -> list[tuple[str, str, str]]:
    """(premise, hypothesis, label) rows from ``stanfordnlp/snli`` records (label 0/1/2, -1 = no gold label).

    Rows without a gold label or with an empty sentence are left out. Texts go through
    :func:`detokenize` like the local files' (a no-op on plain text apart from stray spaces before
    punctuation), so the hub and a ``make data`` copy give the same rows (notebooks 03 and 05).
    """
    rows = []
    for n, rec in enumerate(records, start=1):
        if not {"premise", "hypothesis", "label"} <= set(rec):
            raise DataError(source, n, f"record lacks premise/hypothesis/label; has {sorted(rec)}")
        if isinstance(rec["label"], bool) or rec["label"] not in SNLI_LABELS:
            if rec["label"] in (-1, None):
                continue  # no gold label
            raise DataError(source, n, f"unknown label {rec['label']!r}; expected 0, 1, 2 or -1 (no gold label)")
        premise, hypothesis = detokenize(str(rec["premise"])), detokenize(str(rec["hypothesis"]))
        if premise and hypothesis:
            rows.append((premise, hypothesis, SNLI_LABELS[rec["label"]]))
    return rows


def _snli_rows(split: str, data_dir=None) -> list[tuple[str, str, str]]:
    rows = snli_rows_from_files(split, data_dir)
    if rows is None:
        rows = snli_rows_from_hub_records(_hub_records(SNLI_HUB_ID, SNLI_HUB_SPLITS[split]))
    return rows


def snli_triplets(rows: Sequence[tuple[str, str, str]]) -> dict[str, list]:
    """(anchor, positive, negative) columns: each premise's entailed hypotheses zipped with its contradicting ones
    (notebook 00; used by all)."""
    ent: dict[str, list[str]] = {}
    con: dict[str, list[str]] = {}
    for p, h, label in rows:
        if label == "entailment":
            ent.setdefault(p, []).append(h)
        elif label == "contradiction":
            con.setdefault(p, []).append(h)
    cols: dict[str, list] = {"anchor": [], "positive": [], "negative": []}
    for p, positives in ent.items():
        for pos, neg in zip(positives, con.get(p, [])):
            cols["anchor"].append(p)
            cols["positive"].append(pos)
            cols["negative"].append(neg)
    return cols


def load_snli_triplets(
    split: str = "dev", size: int | None = None, seed: int = 0, data_dir: str | os.PathLike | None = None
) -> Dataset:
    """SNLI (anchor, positive, hard negative) triplets for MultipleNegativesRankingLoss (notebooks 03, 05)."""
    return subset(Dataset.from_dict(snli_triplets(_snli_rows(split, data_dir))), size, seed)


def snli_retrieval(rows: Sequence[tuple[str, str, str]], n_queries: int | None = None, seed: int = 0) -> dict:
    """An IR task: query = premise, relevant = its entailed hypotheses, corpus = all hypotheses
    (notebook 00; used by all).

    Returns ``{"queries": {qid: text}, "corpus": {cid: text}, "relevant": {qid: {cid}}}``;
    the premise's neutral and contradicting hypotheses stay in the corpus as hard distractors.
    """
    corpus_ids: dict[str, str] = {}
    relevant_text: dict[str, set[str]] = {}
    for p, h, label in rows:
        corpus_ids.setdefault(h, f"d{len(corpus_ids)}")
        if label == "entailment":
            relevant_text.setdefault(p, set()).add(h)
    premises = sorted(relevant_text)
    if n_queries is not None and n_queries < len(premises):
        import random

        premises = sorted(random.Random(seed).sample(premises, n_queries))
    queries = {f"q{i}": p for i, p in enumerate(premises)}
    relevant = {qid: {corpus_ids[h] for h in relevant_text[p]} for qid, p in queries.items()}
    corpus = {cid: text for text, cid in corpus_ids.items()}
    return {"queries": queries, "corpus": corpus, "relevant": relevant}


def load_snli_retrieval(
    split: str = "test", n_queries: int | None = None, seed: int = 0, data_dir: str | os.PathLike | None = None
) -> dict:
    """SNLI retrieval evaluation from ``split`` (see :func:`snli_retrieval`); notebooks 03 and 05."""
    return snli_retrieval(_snli_rows(split, data_dir), n_queries, seed)


# --------------------------------------------------------------------------- the learner's own file


def load_pairs_file(
    path: str | os.PathLike,
    score_range: tuple[float, float] = (0.0, 1.0),
    size: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Load a learner's CSV, TSV or JSONL file of pairs or triplets (notebook 07, ``python -m helpers``).

    Accepted columns: ``sentence1, sentence2, score`` (graded similarity; the
    score must lie in ``score_range`` and is rescaled to [0, 1]) or
    ``anchor, positive[, negative]`` (retrieval). CSV and TSV need a header row.
    Raises :class:`DataError` naming the file and line for any bad row.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "file not found")
    suffix = path.suffix.lower()
    if suffix not in {".csv", ".tsv", ".jsonl", ".json"}:
        raise DataError(path, None, f"unsupported extension {suffix!r}; use .csv, .tsv or .jsonl")
    text = _read_text(path)
    if not text.strip():
        raise DataError(path, None, "the file is empty")
    header, rows = _jsonl_rows(text, path) if suffix in {".jsonl", ".json"} else _delimited_rows(text, path, suffix)
    kind = _column_kind(header, path)
    lo, hi = score_range
    if not lo < hi:
        raise ValueError(f"score_range must be (low, high) with low < high, got {score_range}.")
    cols: dict[str, list] = {c: [] for c in (PAIR_COLUMNS if kind == "pairs" else _triplet_cols(header))}
    for line, rec in rows:
        for c in cols:
            if c == "score":
                v = _parse_score(rec.get(c), path, line, (lo, hi))
                cols[c].append((v - lo) / (hi - lo))
            else:
                cols[c].append(_text_field(rec.get(c), c, path, line))
    if not rows:
        raise DataError(path, None, "the file has a header but no rows")
    return subset(Dataset.from_dict(cols), size, seed, strict=True)


def _triplet_cols(header: Sequence[str]) -> tuple[str, ...]:
    return TRIPLET_COLUMNS if "negative" in header else TRIPLET_COLUMNS[:2]


def _column_kind(header: Sequence[str], path) -> str:
    cols = set(header)
    if set(PAIR_COLUMNS) <= cols:
        return "pairs"
    if {"anchor", "positive"} <= cols:
        return "triplets"
    wanted = list(PAIR_COLUMNS) + list(TRIPLET_COLUMNS)
    hints = []
    for c in header:
        close = difflib.get_close_matches(c.lower(), wanted, n=1, cutoff=0.6)
        if close and close[0] != c:
            hints.append(f"{c!r} -> {close[0]!r}")
    hint = f" Did you mean: {', '.join(hints)}?" if hints else ""
    raise DataError(
        path,
        1,
        f"columns {list(header)} match neither 'sentence1, sentence2, score' nor 'anchor, positive[, negative]'.{hint}",
    )


def _delimited_rows(text: str, path: Path, suffix: str) -> tuple[list[str], list[tuple[int, dict]]]:
    delimiter = "\t" if suffix == ".tsv" else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except (StopIteration, csv.Error) as exc:  # pragma: no cover - empty handled earlier
        raise DataError(path, 1, f"cannot read the header: {exc}") from None
    if len(set(header)) != len(header):
        raise DataError(path, 1, f"duplicate column names in header {header}")
    rows = []
    try:
        for rec in reader:
            line = reader.line_num
            if not rec or all(not f.strip() for f in rec):
                continue
            if len(rec) != len(header):
                raise DataError(path, line, f"expected {len(header)} fields like the header, found {len(rec)}")
            rows.append((line, dict(zip(header, rec))))
    except csv.Error as exc:
        raise DataError(path, reader.line_num, f"malformed {suffix[1:].upper()}: {exc}") from None
    return header, rows


def _jsonl_rows(text: str, path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    rows = []
    header: list[str] | None = None
    for n, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataError(path, n, f"not valid JSON: {exc.msg}") from None
        except ValueError as exc:  # e.g. an integer with more than 4300 digits
            raise DataError(path, n, f"not valid JSON for this loader: {exc}") from None
        except RecursionError:
            raise DataError(path, n, "not valid JSON for this loader: nested too deeply") from None
        if not isinstance(rec, dict):
            raise DataError(path, n, f"expected a JSON object per line, found {type(rec).__name__}")
        if header is None:
            header = list(rec)
            _column_kind(header, path)
        elif set(rec) != set(header):
            raise DataError(path, n, f"keys {sorted(rec)} differ from the first line's {sorted(header)}")
        rows.append((n, rec))
    return header or [], rows


def _hub_records(dataset_id: str, split: str):
    """Records of a hub data set (needs internet or a populated cache); a clear :class:`DataError` otherwise."""
    from datasets import load_dataset

    try:
        return load_dataset(dataset_id, split=split)
    except Exception as exc:
        raise DataError(None, None, missing_data_message(dataset_id, split, exc)) from exc


def missing_data_message(dataset_id: str, split: str, exc: BaseException | None = None) -> str:
    """What to do when a data set is neither on disk nor reachable on the hub (notebook 00's first data cell)."""
    where = LOCAL_LAYOUT.get(dataset_id, "")
    looked = ", ".join(str(d / where) for d in data_dirs())
    env = f"${DATA_ENV} is not set" if not os.environ.get(DATA_ENV) else f"${DATA_ENV}={os.environ[DATA_ENV]}"
    offline = (" HF_HUB_OFFLINE=1 is set, so the hub was not tried; unset it on a machine with internet."
               if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"} else "")
    cause = f" (hub error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})" if exc else ""
    return (f"The workshop data {dataset_id!r} ({split}) is not on this machine and could not be loaded from "
            f"the Hugging Face hub. To fix: {FETCH_HINT}. Looked in: {looked} ({env}).{offline}{cause}")
