"""Merge reference records made elsewhere (a GPU check, another machine) into results/reference/.

    python tools/merge_reference.py outputs/gpu-check/reference --note "GPU check 2026-11-30, tree 522034f"

Reads every ``*.jsonl`` under the given folders (``tools/gpu_check.sh`` writes one store per
process, ``reference/wN/<notebook>.jsonl``) and appends each record whose key the store does not
hold yet to the store file of the same notebook. Records already there are kept as they are (the
first record of a key stays), so merging twice changes nothing. ``--note`` is stored in each merged
record as ``source``. Prints what it merged, by experiment.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers import reference as R  # noqa: E402


def read(folder: Path) -> list[tuple[str, dict]]:
    """(notebook, record) for every record under ``folder``, in file order."""
    out = []
    for path in sorted(folder.rglob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.append((path.stem, json.loads(line)))
    return out


def merge(folders: list[Path], store: Path | None = None, note: str | None = None, dry_run: bool = False) -> Counter:
    """Append the records the store lacks; returns how many were merged per experiment (``untuned`` for scores)."""
    have = set(R.load_records(store))
    merged: Counter = Counter()
    for folder in folders:
        for notebook, rec in read(folder):
            if rec.get("kind") == "untuned":
                rec["key"] = R.untuned_key(rec["config"], rec.get("versions", {}).get("python"))
            if rec["key"] in have:
                continue
            if note:
                rec["source"] = note
            if not dry_run:
                R.append_record(R.store_path(notebook, store), rec)
            have.add(rec["key"])
            merged[rec.get("experiment", "untuned")] += 1
    return merged


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path, help="folders holding *.jsonl records (searched recursively)")
    p.add_argument("--store", type=Path, default=None, help="the store to merge into (default results/reference)")
    p.add_argument("--note", help="where the records come from, stored in each merged record as 'source'")
    p.add_argument("--dry-run", action="store_true", help="only say what would be merged")
    a = p.parse_args(argv)
    missing = [str(f) for f in a.folders if not f.is_dir()]
    if missing:
        p.error(f"no such folder: {', '.join(missing)}")
    merged = merge(a.folders, a.store, a.note, a.dry_run)
    verb = "would merge" if a.dry_run else "merged"
    print(f"{verb} {sum(merged.values())} records: " + (", ".join(f"{k} {v}" for k, v in sorted(merged.items()))
                                                      or "none (the store has them all)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
