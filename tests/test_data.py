"""Loaders on the real shared data, the hub code path on hub-shaped records, and every bad input."""
import json

import pytest
from hypothesis import given, settings, strategies as st

from helpers import data as D
from helpers.data import DataError


# ---------------------------------------------------------------- real data

def test_stsb_official_counts_and_normalised_scores():
    counts = {s: len(D.load_stsb(s)) for s in ("train", "dev", "test")}
    assert counts == {"train": 5749, "dev": 1500, "test": 1379}
    ds = D.load_stsb("test")
    assert ds.column_names == ["sentence1", "sentence2", "score"]
    assert min(ds["score"]) >= 0 and max(ds["score"]) <= 1
    assert ds[0] == {"sentence1": "A girl is styling her hair.", "sentence2": "A girl is brushing her hair.", "score": 0.5}


def test_stsb_subset_is_seeded_and_deterministic():
    a, b = D.load_stsb("train", 50, seed=1), D.load_stsb("train", 50, seed=1)
    c = D.load_stsb("train", 50, seed=2)
    assert len(a) == 50 and a["sentence1"] == b["sentence1"] and a["sentence1"] != c["sentence1"]


def test_snli_triplets_are_detokenised():
    t = D.load_snli_triplets("dev")
    assert t.column_names == ["anchor", "positive", "negative"]
    assert len(t) == 2954  # every (premise, entailment, contradiction) triplet of the SNLI dev split
    assert t[0]["anchor"] == "Two women are embracing while holding to go packages."
    assert not any(" n't" in s or s.endswith(" .") for s in t["positive"][:500])


def test_snli_retrieval_structure():
    ir = D.load_snli_retrieval("test")
    assert len(ir["queries"]) == 3089 and len(ir["corpus"]) == 9639
    qid = next(iter(ir["queries"]))
    assert ir["relevant"][qid] <= set(ir["corpus"])
    small = D.load_snli_retrieval("test", n_queries=20, seed=0)
    assert len(small["queries"]) == 20


@pytest.mark.parametrize("text,expected", [
    ("He does n't know .", "He doesn't know."),
    ("`` Hi , '' she said ( loudly ) .", '"Hi," she said (loudly).'),
    ("It costs $ 5 , or 10 % .", "It costs $5, or 10%."),
])
def test_detokenize(text, expected):
    assert D.detokenize(text) == expected


# ---------------------------------------------------------------- the hub path, offline

def test_stsb_from_hub_shaped_records(monkeypatch, tmp_path):
    records = [{"sentence1": "A man plays.", "sentence2": "A man is playing.", "score": 0.9},
               {"sentence1": "A cat.", "sentence2": "A dog.", "score": 0.1}]
    seen = {}

    def fake_hub(dataset_id, split):
        seen["args"] = (dataset_id, split)
        return records

    monkeypatch.setenv("WORKSHOP_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(D, "PROJECT_ROOT", tmp_path / "nowhere")
    monkeypatch.setattr(D, "_hub_records", fake_hub)
    ds = D.load_stsb("dev")
    assert seen["args"] == ("sentence-transformers/stsb", "validation")
    assert ds["score"] == [0.9, 0.1]


def test_snli_from_hub_shaped_records_skips_unlabelled(monkeypatch, tmp_path):
    records = [
        {"premise": "A dog runs.", "hypothesis": "An animal moves.", "label": 0},
        {"premise": "A dog runs.", "hypothesis": "A dog sleeps.", "label": 2},
        {"premise": "A dog runs.", "hypothesis": "A dog runs fast.", "label": 1},
        {"premise": "A dog runs.", "hypothesis": "?", "label": -1},
    ]
    monkeypatch.setenv("WORKSHOP_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(D, "PROJECT_ROOT", tmp_path / "nowhere")
    monkeypatch.setattr(D, "_hub_records", lambda ds, split: records)
    t = D.load_snli_triplets("dev")
    assert t[0] == {"anchor": "A dog runs.", "positive": "An animal moves.", "negative": "A dog sleeps."}
    ir = D.load_snli_retrieval("test")
    assert len(ir["corpus"]) == 3 and len(ir["queries"]) == 1


def test_hub_records_with_wrong_shape_fail_clearly():
    with pytest.raises(DataError, match="record lacks"):
        D.stsb_from_hub_records([{"text": "x"}])


def test_hub_failure_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKSHOP_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(D, "PROJECT_ROOT", tmp_path / "nowhere")

    def offline(*a, **k):
        raise ConnectionError("no network")

    import datasets
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="run `make data`.*on a machine with internet.*WORKSHOP_DATA_DIR"):
        D.load_stsb("test")


# ---------------------------------------------------------------- the learner's own file

def write(tmp_path, name, content, mode="w"):
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8")
    return p


def test_pairs_csv_tsv_jsonl(tmp_path):
    csv_p = write(tmp_path, "a.csv", 'sentence1,sentence2,score\n"A, quoted one",B,0.5\nC,D,1\n')
    tsv_p = write(tmp_path, "a.tsv", "sentence1\tsentence2\tscore\nA\tB\t0.25\n")
    jsonl_p = write(tmp_path, "a.jsonl", json.dumps({"anchor": "q", "positive": "p", "negative": "n"}) + "\n")
    assert D.load_pairs_file(csv_p)["sentence1"] == ["A, quoted one", "C"]
    assert D.load_pairs_file(tsv_p)["score"] == [0.25]
    assert D.load_pairs_file(jsonl_p).column_names == ["anchor", "positive", "negative"]


def test_score_range_rescales(tmp_path):
    p = write(tmp_path, "five.csv", "sentence1,sentence2,score\nA,B,5\nC,D,2.5\n")
    assert D.load_pairs_file(p, score_range=(0, 5))["score"] == [1.0, 0.5]


@pytest.mark.parametrize("name,content,line,match", [
    ("empty.csv", "", None, "empty"),
    ("blank.csv", "\n\n  \n", None, "empty"),
    ("header.csv", "sentence1,sentence2,score\n", None, "no rows"),
    ("cols.csv", "sentence_1,sentence2,score\nA,B,0.5\n", 1, "Did you mean: 'sentence_1' -> 'sentence1'"),
    ("cols2.csv", "text,label\nA,1\n", 1, "match neither"),
    ("emptys.csv", "sentence1,sentence2,score\nA,B,0.5\nA, ,0.5\n", 3, "empty sentence2"),
    ("range.csv", "sentence1,sentence2,score\nA,B,0.5\nA,B,4\n", 3, "outside \\[0, 1\\]"),
    ("nan.csv", "sentence1,sentence2,score\nA,B,high\n", 2, "not a number"),
    ("nan2.csv", "sentence1,sentence2,score\nA,B,nan\n", 2, "outside"),
    ("ragged.csv", "sentence1,sentence2,score\nA,B,0.5\nA,B\n", 3, "expected 3 fields"),
    ("ragged.tsv", "anchor\tpositive\nq\tp\tx\n", 2, "expected 2 fields"),
    ("bad.jsonl", '{"anchor": "q", "positive": "p"}\n{"anchor": "q",\n', 2, "not valid JSON"),
    ("keys.jsonl", '{"anchor": "q", "positive": "p"}\n{"anchor": "q"}\n', 2, "differ"),
    ("list.jsonl", '["q", "p"]\n', 1, "JSON object"),
    ("emptyanchor.jsonl", '{"anchor": "", "positive": "p"}\n', 1, "empty anchor"),
    ("data.txt", "x", None, "unsupported extension"),
])
def test_bad_files_name_file_line_and_problem(tmp_path, name, content, line, match):
    p = write(tmp_path, name, content)
    with pytest.raises(DataError, match=match) as err:
        D.load_pairs_file(p)
    assert err.value.line == line
    assert str(p) in str(err.value)


def test_undecodable_bytes_name_the_line(tmp_path):
    p = write(tmp_path, "latin.csv", "sentence1,sentence2,score\nA,B,0.5\ncaf\xe9,B,0.5\n".encode("latin-1"))
    with pytest.raises(DataError, match="not valid UTF-8") as err:
        D.load_pairs_file(p)
    assert err.value.line == 3


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        D.load_pairs_file(tmp_path / "nope.csv")


def test_subset_larger_than_file_is_an_error(tmp_path):
    p = write(tmp_path, "two.csv", "sentence1,sentence2,score\nA,B,0.5\nC,D,0.5\n")
    with pytest.raises(ValueError, match="larger than the data"):
        D.load_pairs_file(p, size=5)


def test_bad_stsb_file(tmp_path):
    p = write(tmp_path, "sts.csv", "g\tf\t2012\t1\t5.000\tA\tB\ng\tf\t2012\t2\t7.0\tA\tB\n")
    with pytest.raises(DataError, match="outside \\[0, 5\\]") as err:
        D.parse_stsb_file(p)
    assert err.value.line == 2


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.text(max_size=8), min_size=1, max_size=4), min_size=0, max_size=6))
def test_random_csv_either_loads_or_raises_data_error(tmp_path_factory, rows):
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["sentence1", "sentence2", "score"])
    for r in rows:
        w.writerow(r)
    p = tmp_path_factory.mktemp("h") / "r.csv"
    p.write_text(buf.getvalue(), encoding="utf-8")
    try:
        ds = D.load_pairs_file(p)
    except DataError:
        return
    assert all(0 <= s <= 1 for s in ds["score"])
