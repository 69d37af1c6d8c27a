"""The benchmark plumbing (benchmarks/): alternation, medians and the report. No timings are asserted."""
import importlib
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture()
def bench(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    common = importlib.import_module("common")
    report = importlib.import_module("report")
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results.json")
    monkeypatch.setattr(report, "HERE", tmp_path)
    yield common
    for name in ("common", "report"):
        sys.modules.pop(name, None)


def test_alternate_takes_turns_and_medians(bench):
    calls = []
    runs = bench.alternate({"a": lambda: calls.append("a") or {"x": len(calls)},
                            "b": lambda: calls.append("b") or {"x": 10 * len(calls)}}, repeats=3)
    assert calls == ["a", "b", "b", "a", "a", "b"]  # no side always goes first
    assert [r["x"] for r in runs["a"]] == [1, 4, 5]
    med = bench.medians(runs["b"])
    assert med["x"] == 30 and med["repeats"] == 3


def test_record_merges_and_writes_the_readme(bench, tmp_path):
    bench.record("one", {"title": "1. One", "columns": ["k", "v"], "rows": [{"k": "a", "v": 1.23456}],
                         "goals": [{"goal": "fast", "measured": "2x", "status": bench.status(True)}]})
    bench.record("gpu", {"title": "6. GPU", "skipped": "no CUDA GPU on this machine"})
    data = json.loads((tmp_path / "results.json").read_text())
    assert set(data["benchmarks"]) == {"one", "gpu"}
    assert data["benchmarks"]["one"]["machine"]["cpu_cores"] >= 1
    readme = (tmp_path / "README.md").read_text()
    assert "| a | 1.23 |" in readme and "**met**" in readme and "Skipped: no CUDA GPU" in readme


def test_padding_share_grouping_removes_padding(bench):
    levers = importlib.import_module("bench_cpu_levers")

    class Tok:
        def __call__(self, texts, **kw):
            return {"input_ids": [[0] * len(t) for t in texts]}

    texts = ["x" * n for n in (1, 9, 2, 8, 3, 7, 4, 6)]
    random_share = levers.padding_share(texts, Tok(), batch=2, grouped=False)
    grouped_share = levers.padding_share(texts, Tok(), batch=2, grouped=True)
    assert 0 <= grouped_share < random_share < 1
    sys.modules.pop("bench_cpu_levers", None)
