"""Reference runs at real scale, stored with the project, and the verdicts computed from them.

``make reference`` (``python -m helpers.reference [--only NN] [--experiment KEY]``) runs the
experiments of :mod:`helpers.claims` and appends every finished run as one JSON line to
``results/reference/<notebook>.jsonl``: its settings, seed, metrics, evaluation curve, wall
time, device, precision, library versions and git commit. A rerun skips finished runs, so the
set can be spread over several sittings and interrupted at any time. Each notebook's
"reference verdict" cells call :func:`claim_verdict`, which computes the verdict from those
records (never typed).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

from .claims import CLAIMS, EXPERIMENTS, Claim, Experiment, claim, experiment
from .config import pick_device
from .evaluation import score
from .models import load_model
from .settings import TrainConfig
from .training import prepare_task, train
from .verdicts import compare, default_margin, judge, verdict

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_DIR = ROOT / "results" / "reference"
SCHEMA = 1
SMOKE = dict(train_size=24, dev_size=24, test_size=24, epochs=1, batch_size=8, max_seq_length=32,
             evals_per_epoch=1)


# ---------------------------------------------------------------- planning
def run_config(exp: Experiment, arm: str, rate: float | None, seed: int, smoke: bool = False) -> TrainConfig:
    """The TrainConfig of one reference run (``smoke``: tiny sizes for tests, same structure).

    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    changes = {**exp.base, **exp.arms[arm], "seed": seed, "scale": "full"}
    if exp.device:  # a claim about one kind of device runs there, whatever else the machine has
        changes["device"] = exp.device
    if rate is not None:
        changes["learning_rate"] = rate
    if smoke:
        changes.update(SMOKE, epochs=2 if exp.arms[arm].get("gradual_unfreezing") else 1)
    return TrainConfig(**changes)


def plan(exp: Experiment, smoke: bool = False) -> list[dict]:
    """Every run of ``exp``: ``{experiment, arm, rate, seed, config, key}``, seeds outermost (paired order).

    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    seeds = exp.seeds[:2] if smoke else exp.seeds
    rates = (exp.rates[:2] if smoke else exp.rates) or (None,)
    runs = []
    for seed in seeds:
        for rate in rates:
            for arm in exp.arms:
                cfg = run_config(exp, arm, rate, seed, smoke)
                runs.append({"experiment": exp.key, "arm": arm, "rate": cfg.learning_rate, "seed": seed,
                             "config": cfg, "key": run_key(cfg, exp.device)})
    return runs


def run_key(cfg: TrainConfig, device: str | None = None) -> str:
    """A stable id of a run's settings: runs with the same settings are one run, whichever experiment asks.
    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).

    The device is not part of the settings, so a run made on a GPU serves a CPU's plan too, except for
    experiments about one kind of device (``Experiment.device``, e.g. bf16 on the CPU): their keys
    carry ``device``, so a GPU run of the same settings never stands in for the CPU's.
    """
    d = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in ("output_dir", "device")}
    if device:
        d["device_kind"] = device
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


UNTUNED_FIELDS = ("model", "task", "train_size", "dev_size", "test_size", "max_seq_length")


def untuned_key(cfg: TrainConfig | dict, python: str | None = None) -> str:
    """What the untuned score depends on: the model, the data and the sequence length.
    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).

    The code-search task is built from the running Python's standard library
    (:mod:`helpers.codesearch`), so its data, and its key, also depend on the
    Python version (``python``, default: this one).
    """
    if not isinstance(cfg, dict):  # the resolved settings, as the untuned record stores them
        rc = cfg.resolved()
        cfg = {k: getattr(rc, k) for k in UNTUNED_FIELDS}
    get = cfg.get
    d = {k: get(k) for k in UNTUNED_FIELDS}
    d["kind"] = "untuned"
    if d["task"] == "codesearch":
        d["python"] = ".".join((python or platform.python_version()).split(".")[:2])
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- the store
def store_path(notebook: str, store: Path | None = None) -> Path:
    """Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05)."""
    return Path(store or REFERENCE_DIR) / f"{notebook}.jsonl"


def load_records(store: Path | None = None) -> dict[str, dict]:
    """Every finished record in the store, by key (a later record for the same key wins).

    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    out: dict[str, dict] = {}
    folder = Path(store or REFERENCE_DIR)
    for path in sorted(folder.glob("*.jsonl")) if folder.exists() else []:
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line:
                rec = json.loads(line)
                if rec.get("kind") == "untuned":  # keyed by what it depends on (older records: without Python)
                    rec["key"] = untuned_key(rec["config"], rec.get("versions", {}).get("python"))
                elif _device_specific(rec):  # keyed by the device it ran on (older records: without it)
                    rec["key"] = _device_key(rec)
                out[rec["key"]] = rec
    return out


def _device_specific(rec: dict) -> bool:
    exp = next((e for e in EXPERIMENTS if e.key == rec.get("experiment")), None)
    return rec.get("kind") == "run" and exp is not None and exp.device is not None


def _device_key(rec: dict) -> str:
    """The key of a run of a device-specific experiment: its plan's settings plus the device it ran on."""
    exp = experiment(rec["experiment"])
    smoke = rec["config"].get("train_size") == SMOKE["train_size"]
    cfg = run_config(exp, rec["arm"], rec["rate"] if exp.rates else None, rec["seed"], smoke)
    return run_key(cfg, device_kind(rec))


def append_record(path: Path, record: dict) -> None:
    """Append one record as one line, flushed to disk (an interrupted run never leaves half a line).

    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, default=_json_default) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _json_default(obj):
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def provenance() -> dict:
    """Versions and git commit, stored in every record.

    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    import sentence_transformers
    import torch
    import transformers

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "cpu_threads": torch.get_num_threads(), "commit": commit}


# ---------------------------------------------------------------- running
def record_of(run: dict, result) -> dict:
    """The JSON record of one finished run.

    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    return {
        "schema": SCHEMA, "kind": "run", "key": run["key"], "experiment": run["experiment"], "arm": run["arm"],
        "rate": run["rate"], "seed": run["seed"], "config": result.config,
        "metrics": {"dev": result.dev_metric, "dev_start": result.dev_metric_start, "test": result.test_metric,
                    "best_step": result.best_step, "steps": result.steps, "stop": result.stop_reason},
        "metric": result.metric, "evals": result.evals,
        "wall_s": result.wall_time, "steps_per_s": result.steps_per_sec, "peak_mb": result.peak_memory_mb,
        "device": result.device, "precision": result.precision, "versions": provenance(),
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def untuned_record(cfg: TrainConfig) -> dict:
    """Score the untuned model on the regime's dev and test splits (one record per regime).

    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    rc = cfg.resolved()
    task = prepare_task(rc)
    model = load_model(rc.model, device=pick_device(rc.device), max_seq_length=rc.max_seq_length)
    start = time.perf_counter()
    dev, test = score(model, task.dev_evaluator), score(model, task.test_evaluator)
    return {"schema": SCHEMA, "kind": "untuned", "key": untuned_key(cfg), "task": rc.task, "metric": task.metric,
            "config": {k: getattr(rc, k) for k in ("model", "task", "train_size", "dev_size", "test_size",
                                                      "max_seq_length")},
            "metrics": {"dev": dev, "test": test}, "wall_s": time.perf_counter() - start,
            "versions": provenance(), "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def run_experiment(exp: Experiment, store: Path | None = None, smoke: bool = False, progress: bool = True,
                   log=print) -> int:
    """Run every unfinished run of ``exp`` (untuned score first); returns how many ran now.

    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    path = store_path(exp.notebook, store)
    done = load_records(store)
    runs = plan(exp, smoke)
    first = runs[0]["config"]
    if untuned_key(first) not in done:
        rec = untuned_record(first)
        append_record(path, rec)
        log(f"[{exp.key}] untuned: dev {rec['metrics']['dev']:.4f}, test {rec['metrics']['test']:.4f}")
    todo = [r for r in runs if r["key"] not in done]
    log(f"[{exp.key}] {len(runs) - len(todo)} of {len(runs)} runs already stored; {len(todo)} to run")
    for i, run in enumerate(todo, 1):
        result = train(run["config"], progress=progress)
        if result.stop_reason == "interrupted":
            raise KeyboardInterrupt
        append_record(path, record_of(run, result))
        log(f"[{exp.key}] {i}/{len(todo)} {run['arm']} rate={run['rate']:g} seed={run['seed']}: "
            f"dev {result.dev_metric:.4f} test {result.test_metric:.4f} ({result.wall_time:.0f} s, {result.precision})")
    return len(todo)


def selected(only: list[str] | None = None, keys: list[str] | None = None) -> list[Experiment]:
    """Experiments in priority order, filtered by notebook number (``only``) or key (``keys``).

    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    exps = sorted(EXPERIMENTS, key=lambda e: e.priority)
    if only:
        exps = [e for e in exps if e.notebook[:2] in {o.zfill(2) for o in only}]
    if keys:
        exps = [experiment(k) for k in keys]
    return exps


# ---------------------------------------------------------------- verdicts from records
def arm_runs(exp: Experiment, arm: str, rate: float | None, records: dict, smoke: bool = False) -> list[dict]:
    """The stored records of one arm at one rate, one per seed (missing seeds left out).

    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    out = []
    for seed in (exp.seeds[:2] if smoke else exp.seeds):
        rec = records.get(run_key(run_config(exp, arm, rate, seed, smoke), exp.device))
        if rec is not None:
            out.append({"seed": seed, "test": rec["metrics"]["test"], "dev": rec["metrics"]["dev"],
                        "wall_s": rec["wall_s"], "record": rec})
    return out


def device_kind(record: dict) -> str:
    """``cuda``, ``mps`` or ``cpu``: the kind of device a record was trained on (``cuda:0`` -> ``cuda``).

    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    return str(record.get("device") or "cpu").split(":")[0]


def same_device_pairs(a_runs: list[dict], b_runs: list[dict]) -> tuple[list[dict], list[dict]]:
    """The seeds both arms ran on the same kind of device, in seed order (a pair never mixes a GPU and a CPU run:
    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    their kernels differ, so such a difference would be partly the device's)."""
    b_by_seed = {r["seed"]: r for r in b_runs}
    a = [r for r in a_runs if r["seed"] in b_by_seed
         and device_kind(r["record"]) == device_kind(b_by_seed[r["seed"]]["record"])]
    return a, [b_by_seed[r["seed"]] for r in a]


def best_rate(exp: Experiment, arm: str, records: dict, rates=None, smoke: bool = False) -> tuple[float | None, dict]:
    """The arm's rate with the best mean dev score over its seeds (the nuisance choice), and every rate's mean.

    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    rates = rates or ((exp.rates[:2] if smoke else exp.rates) or (None,))
    means = {}
    for r in rates:
        runs = arm_runs(exp, arm, r, records, smoke)
        if runs:
            means[r] = sum(x["dev"] for x in runs) / len(runs)
    if not means:
        return None, {}
    return max(means, key=means.get), means


def claim_comparison(c: Claim, records: dict | None = None, smoke: bool = False, store: Path | None = None):
    """The paired comparison behind a claim, from stored records: each arm at its best dev rate.

    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    records = load_records(store) if records is None else records
    exp = experiment(c.experiment)
    if "b_rate" in c.extra:  # the same arm at a high rate against its best in-range rate
        ra, _ = best_rate(exp, c.a, records, c.extra["a_rates"], smoke)
        a_name, b_name, rb = c.a, c.a, c.extra["b_rate"]
    else:
        ra, _ = best_rate(exp, c.a, records, smoke=smoke)
        rb, _ = best_rate(exp, c.b, records, smoke=smoke)
        a_name, b_name = c.a, c.b
    a_runs, b_runs = same_device_pairs(arm_runs(exp, a_name, ra, records, smoke),
                                       arm_runs(exp, b_name, rb, records, smoke))
    if not a_runs or not b_runs:
        return None
    python = a_runs[0]["record"].get("versions", {}).get("python")
    untuned = records.get(untuned_key(run_config(exp, c.a, None, 0, smoke), python))
    metric = a_runs[0]["record"].get("metric", "Spearman")
    a_label = a_name if ra is None else f"{a_name} @ {ra:g}"
    b_label = b_name if rb is None else f"{b_name} @ {rb:g}"
    return compare(a_label, a_runs, b_label, b_runs, key=c.key_metric, metric=metric,
                   margin=default_margin(metric), untuned=untuned["metrics"][c.key_metric] if untuned else None)


def experiment_records(exp: Experiment, records: dict, smoke: bool = False) -> list[dict]:
    """The stored records that belong to ``exp`` (also those first run for another experiment).

    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    keys = {r["key"] for r in plan(exp, smoke)}
    return [r for r in records.values() if r.get("kind") == "run" and r["key"] in keys]


def describe_store(records: list[dict]) -> str:
    """Where the records came from: seeds, devices, precisions, commits.

    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    devices = sorted({f"{r['device']} {r['precision']}" for r in records})
    commits = sorted({r["versions"]["commit"] for r in records})
    return f"{len({r['seed'] for r in records})} seeds, {', '.join(devices)}, commit {', '.join(commits)}"


def claim_verdict(key: str, store: Path | None = None, smoke: bool = False, records: dict | None = None) -> str:
    """The reference verdict of one claim, computed from the stored records (notebooks' reference cells).

    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    c = claim(key)
    exp = experiment(c.experiment)
    records = load_records(store) if records is None else records
    comp = claim_comparison(c, records, smoke)
    head = f"Reference ({exp.key}: {exp.question})"
    if comp is None:
        return (f"{head}\nClaim: {c.text}\nVerdict: NOT YET RUN (no stored records; `make reference "
                f"EXPERIMENT={exp.key}` runs them).")
    used = experiment_records(exp, records, smoke)
    text = verdict(c.text, comp, metric=f"test {used[0].get('metric', 'score')}", expect=c.expect)
    source = f"Stored runs: {len(used)} ({describe_store(used)})."
    note = f"\nNote: {c.note}" if c.note else ""
    return f"{head}\n{text}\n{source}{note}"


def claim_status(key: str, store: Path | None = None, smoke: bool = False, records: dict | None = None) -> str:
    """``supported`` / ``contradicted`` / ``no difference`` / ``inconclusive`` / ``no verdict`` / ``not run``.

    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    c = claim(key)
    comp = claim_comparison(c, load_records(store) if records is None else records, smoke)
    return "not run" if comp is None else judge(comp, c.expect)


def summary_table(store: Path | None = None, notebook: str | None = None):
    """One row per claim: the verdict, the interval, the seeds and the baseline gain (README, closing notes).

    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    import pandas as pd

    records = load_records(store)
    rows = []
    for c in CLAIMS:
        if notebook and not c.notebook.startswith(notebook):
            continue
        comp = claim_comparison(c, records)
        row = {"notebook": c.notebook[:2], "claim": c.text}
        if comp is None:
            row.update(verdict="not run")
        else:
            row.update(verdict=judge(comp, c.expect), a=comp.a, b=comp.b, diff=round(comp.diff, 4),
                       interval=f"{comp.low:+.4f} to {comp.high:+.4f}" if comp.n >= 2 else "", seeds=comp.n,
                       gain=None if comp.untuned is None else round(comp.mean_b - comp.untuned, 4))
        rows.append(row)
    return pd.DataFrame(rows)


def show(notebook: str, store: Path | None = None) -> None:
    """Print every claim's reference verdict for one notebook (``"01"``), computed from the stored records.
    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).

    The notebooks' "Reference verdicts" cells call this; the records are what ``make reference``
    stored, so the output is the same on every machine until new records are committed.
    """
    records = load_records(store)
    claims = [c for c in CLAIMS if c.notebook.startswith(notebook)]
    if not claims:
        raise KeyError(f"No claims for notebook {notebook!r}; notebooks with claims: "
                       f"{', '.join(sorted({c.notebook[:2] for c in CLAIMS}))}.")
    for c in claims:
        print(claim_verdict(c.key, store, records=records), end="\n\n")


def _cell(v) -> str:
    if v is None or v != v:  # None or NaN: an empty cell
        return ""
    if isinstance(v, float) and v.is_integer() and abs(v) >= 1:  # seed counts that pandas made floats
        return str(int(v))
    return str(v)


def markdown_table(df) -> str:
    """A pandas table as a Markdown table (no extra dependency).

    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    cols = list(df.columns)
    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        rows.append("| " + " | ".join(_cell(v) for v in r.tolist()) + " |")
    return "\n".join(rows)


# ---------------------------------------------------------------- command line
def main(argv=None) -> int:
    """``python -m helpers.reference``: run (or list) the reference experiments, resumably.

    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    p = argparse.ArgumentParser(prog="python -m helpers.reference", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", help="notebook numbers, e.g. --only 01 02")
    p.add_argument("--experiment", nargs="*", help="experiment keys (see --list)")
    p.add_argument("--list", action="store_true", help="list experiments, their runs and what is stored")
    p.add_argument("--verdicts", action="store_true", help="print every claim's reference verdict and stop")
    p.add_argument("--table", action="store_true", help="print the claim table in Markdown (README) and stop")
    p.add_argument("--store", type=Path, default=None, help="folder of the JSONL records (default results/reference)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (tests)")
    args = p.parse_args(argv)
    try:
        exps = selected(args.only, args.experiment)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    if args.table:
        print(markdown_table(summary_table(args.store)))
        return 0
    if args.verdicts:
        for c in CLAIMS:
            print(claim_verdict(c.key, args.store, args.smoke), end="\n\n")
        return 0
    records = load_records(args.store)
    if args.list:
        for e in exps:
            runs = plan(e, args.smoke)
            done = sum(r["key"] in records for r in runs)
            print(f"{e.priority} {e.key:16s} {e.notebook:34s} {done:3d}/{len(runs):3d} runs stored  {e.question}")
        return 0
    try:
        for e in exps:
            run_experiment(e, args.store, args.smoke, progress=sys.stderr.isatty())
    except KeyboardInterrupt:
        print("interrupted: finished runs are stored; rerun the same command to go on.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
