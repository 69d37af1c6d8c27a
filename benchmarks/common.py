"""Shared pieces of the benchmarks: the machine, alternating repeats, medians, and results.json.

Every comparison runs its sides in the same process, alternating (A B A B ...),
so a slow minute on a shared machine hits both sides; the figure reported is
the median over repeats, and the ratio is taken between medians.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results.json"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
shared = ROOT.parent / "shared" / "data"
if shared.is_dir():
    os.environ.setdefault("WORKSHOP_DATA_DIR", str(shared))


def machine() -> dict:
    """What the figures were measured on."""
    import psutil
    import sentence_transformers
    import torch
    import transformers

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def alternate(sides: dict, repeats: int, label: str = "") -> dict[str, list[dict]]:
    """Call every side's function ``repeats`` times, alternating; ``{side: [figures per repeat]}``."""
    from tqdm.auto import tqdm

    out: dict[str, list[dict]] = {name: [] for name in sides}
    with tqdm(total=repeats * len(sides), desc=label or "benchmark", unit="run") as bar:
        for r in range(repeats):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))  # A B, B A, ...: no side always goes first
            for name in order:
                bar.set_postfix_str(name)
                out[name].append(sides[name]())
                bar.update(1)
    return out


def medians(runs: list[dict]) -> dict:
    """Median of every numeric figure over the repeats (other values from the first repeat)."""
    keys = runs[0].keys()
    med = {}
    for k in keys:
        vals = [r[k] for r in runs]
        med[k] = statistics.median(vals) if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals) else vals[0]
    med["repeats"] = len(runs)
    return med


def record(name: str, payload: dict) -> None:
    """Merge one benchmark's figures into ``benchmarks/results.json`` and redraw ``README.md``'s table."""
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data.setdefault("benchmarks", {})[name] = {"machine": machine(), **payload}
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float) + "\n")
    tmp.replace(RESULTS)
    from report import write_readme  # noqa: PLC0415  (benchmarks/ is on sys.path when run as a script)

    write_readme(data)


def status(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT met")
