"""Benchmark 5: what the workshop costs in wall time on this machine.

Executes each numbered notebook headless at workshop scale (``jupyter nbconvert
--execute``) and times it; ``--smoke-suite`` also times the whole smoke test suite
(``make test-py test-nb``). Goals: each notebook within 5 minutes at workshop scale;
the smoke suite within 20 minutes. ``--inplace`` keeps the executed notebooks as the
stored outputs (``make notebooks`` uses this), their progress bars as finished text lines
(``tools/finish_outputs.py``).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, record, status

NB_GOAL_S = 5 * 60
SUITE_GOAL_S = 20 * 60


def execute(nb: Path, scale: str, inplace: bool) -> tuple[float, int]:
    env = {**os.environ, "WORKSHOP_SCALE": scale}
    out = ["--inplace"] if inplace else ["--output-dir", tempfile.mkdtemp(prefix="bench-nb-")]
    cmd = [str(Path(sys.executable).parent / "jupyter"), "nbconvert", "--to", "notebook", "--execute", *out,
           "--ExecutePreprocessor.timeout=3600", "--ExecutePreprocessor.kernel_name=python3", str(nb)]
    start = time.perf_counter()
    rc = subprocess.call(cmd, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    if inplace and rc == 0:  # saved progress bars become plain finished lines (tools/finish_outputs.py)
        subprocess.call([sys.executable, str(ROOT / "tools" / "finish_outputs.py"), str(nb)], cwd=ROOT)
    return wall, rc


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--only", nargs="*", help="notebook numbers to run, e.g. 01 03 (default: all)")
    p.add_argument("--scale", default="workshop")
    p.add_argument("--inplace", action="store_true", help="store the outputs in the notebooks")
    p.add_argument("--smoke-suite", action="store_true", help="also time `make test-py test-nb`")
    a = p.parse_args(argv)
    from common import RESULTS
    import json

    old = json.loads(RESULTS.read_text()).get("benchmarks", {}).get("notebooks", {}) if RESULTS.exists() else {}
    times = {r["notebook"]: r for r in old.get("rows", []) if r.get("scale") == a.scale}
    for nb in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
        if a.only and nb.name[:2] not in a.only:
            continue
        print(f"executing {nb.name} at {a.scale} scale ...", flush=True)
        wall, rc = execute(nb, a.scale, a.inplace)
        times[nb.name] = {"notebook": nb.name, "scale": a.scale, "wall_min": wall / 60, "ok": rc == 0,
                          "goal_min": NB_GOAL_S / 60, "status": status(rc == 0 and wall <= NB_GOAL_S),
                          "load_1min": round(os.getloadavg()[0], 2)}
        print(f"{nb.name}: {wall / 60:.1f} min (exit {rc})", flush=True)
        _save(times, old.get("figures", {}).get("smoke_suite_min"), a.scale)  # after each: a later stop loses nothing
    suite = old.get("figures", {}).get("smoke_suite_min")
    if a.smoke_suite:
        start = time.perf_counter()
        rc = subprocess.call(["make", "test-py", "test-nb"], cwd=ROOT)
        suite = (time.perf_counter() - start) / 60 if rc == 0 else None
    return _save(times, suite, a.scale)


def _save(times: dict, suite: float | None, scale: str) -> dict:
    rows = [times[k] for k in sorted(times)]
    goals = [{"goal": f"{r['notebook']} within 5 min at {scale} scale", "measured": f"{r['wall_min']:.1f} min",
              "status": r["status"]} for r in rows]
    if suite is not None:
        goals.append({"goal": "the smoke suite (pytest + nbval) within 20 min", "measured": f"{suite:.1f} min",
                      "status": status(suite * 60 <= SUITE_GOAL_S)})
    payload = {"title": "5. Workshop wall time", "columns": ["notebook", "scale", "wall_min", "ok", "load_1min", "status"],
               "rows": rows, "goals": goals, "figures": {"smoke_suite_min": suite},
               "notes": "`load_1min` is the machine's load average when the notebook finished: above the core count "
                        "means other work shared the CPU and the time is pessimistic."}
    record("notebooks", payload)
    return payload


if __name__ == "__main__":
    main()
