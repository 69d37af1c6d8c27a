"""Re-execute the notebooks' reference cells after new reference records were committed.

The "Reference verdicts" cells (tag ``reference``) print verdicts computed from
``results/reference/*.jsonl``. Their stored outputs must match those records, or
nbval (which compares them) fails. This runs the first code cell (``hp.setup()``)
and every ``reference`` cell of each notebook in a fresh kernel and stores only
those cells' outputs; every other cell is left exactly as it was.

It also rewrites the claim table in README.md (between ``<!-- claim-table -->`` markers) from the
same records.

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


BEGIN, END = "<!-- claim-table -->", "<!-- /claim-table -->"


def readme_table() -> str:
    """The claim table computed from the stored records, as README.md shows it."""
    sys.path.insert(0, str(ROOT))
    from helpers import reference as R

    return R.markdown_table(R.summary_table())


def refresh_readme(readme: Path = ROOT / "README.md") -> bool:
    """Rewrite the README's claim table; returns whether it changed."""
    text = readme.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{readme_table()}\n{END}{tail}"
    readme.write_text(new)
    return new != text


def main(argv=None) -> int:
    paths = [Path(p) for p in (argv or sys.argv[1:])] or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    for p in paths:
        print(f"{p.name}: {refresh(p)} reference cell(s) refreshed")
    print(f"README.md: claim table {'rewritten' if refresh_readme() else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
