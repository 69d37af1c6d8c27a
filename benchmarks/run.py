"""Run the benchmarks (``make bench``): ``python benchmarks/run.py [name ...]``.

Names: overhead, freezing, cpu_levers, inbatch, notebooks, gpu (default: all, in that order).
Each writes its figures into ``benchmarks/results.json`` and redraws ``benchmarks/README.md``.
"""
from __future__ import annotations

import importlib
import sys

ORDER = ["overhead", "freezing", "cpu_levers", "inbatch", "gpu", "notebooks"]


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = [a for a in argv if not a.startswith("-")] or ORDER
    unknown = set(names) - set(ORDER)
    if unknown:
        sys.exit(f"Unknown benchmark(s) {sorted(unknown)}; choose from {', '.join(ORDER)}.")
    for name in names:
        print(f"=== benchmark: {name}", flush=True)
        importlib.import_module(f"bench_{name}").main([])


if __name__ == "__main__":
    main()
