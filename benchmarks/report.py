"""Draw ``benchmarks/README.md`` from ``results.json``: every figure next to its goal."""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent

INTRO = """# Benchmarks

What the workshop costs and how fast it trains, measured by scripts that print figures
(never by timed assertions in tests: these machines are shared and noisy). Run them all with
`make bench` (or one: `.venv/bin/python benchmarks/run.py freezing`); each writes its figures into
`results.json` and redraws this file. Each comparison runs its sides in the same process,
alternating, and reports medians over repeats, so the ratios hold on a noisy machine.

"""


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return "" if v is None else str(v)


def table(rows: list[dict], columns: list[str]) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |\n" for r in rows)


def write_readme(data: dict) -> None:
    parts = [INTRO]
    for name, b in data.get("benchmarks", {}).items():
        m = b["machine"]
        parts.append(f"## {b.get('title', name)}\n\n")
        parts.append(f"Measured {m['when']} on {m['cpu_cores']} CPU cores ({m['processor']}), "
                     f"{m['memory_gib']} GiB, GPU: {m['gpu'] or 'none'}; torch {m['torch']}, "
                     f"sentence-transformers {m['sentence_transformers']}; load average at the end {m['load_average_1min']}.\n\n")
        if b.get("skipped"):
            parts.append(f"Skipped: {b['skipped']}\n\n")
            continue
        if b.get("rows"):
            parts.append(table(b["rows"], b["columns"]) + "\n")
        for g in b.get("goals", []):
            parts.append(f"- **Goal**: {g['goal']} - **measured**: {g['measured']} - **{g['status']}**\n")
        if b.get("notes"):
            parts.append("\n" + b["notes"].strip() + "\n")
        parts.append("\n")
    (HERE / "README.md").write_text("".join(parts))
