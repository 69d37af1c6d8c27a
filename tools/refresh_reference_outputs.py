"""Re-execute the notebooks' reference cells after new reference records were committed.

The "Reference verdicts" cells (tag ``reference``) print verdicts computed from
``results/reference/*.jsonl``. Their stored outputs must match those records, or
nbval (which compares them) fails. This runs the first code cell (``hp.setup()``)
and every ``reference`` cell of each notebook in a fresh kernel and stores only
those cells' outputs; every other cell is left exactly as it was.

    python tools/refresh_reference_outputs.py [notebooks/01_*.ipynb ...]
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
TAG = "reference"


def refresh(path: Path, kernel: str = "python3") -> int:
    """Run the setup cell and the reference cells of ``path``; store their outputs. Returns how many."""
    nb = nbformat.read(path, as_version=4)
    targets = [i for i, c in enumerate(nb.cells) if TAG in c.get("metadata", {}).get("tags", [])]
    if not targets:
        return 0
    first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    small = copy.deepcopy(nb)
    small.cells = [copy.deepcopy(nb.cells[i]) for i in [first, *targets]]
    NotebookClient(small, timeout=600, kernel_name=kernel, resources={"metadata": {"path": str(path.parent)}}).execute()
    for i, cell in zip(targets, small.cells[1:]):
        nb.cells[i].outputs = cell.outputs
        nb.cells[i].execution_count = cell.execution_count  # nbval compares only cells that carry a count
    nbformat.write(nb, path)
    return len(targets)


def main(argv=None) -> int:
    paths = [Path(p) for p in (argv or sys.argv[1:])] or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    for p in paths:
        print(f"{p.name}: {refresh(p)} reference cell(s) refreshed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
