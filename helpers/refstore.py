"""The reference runs' plan and store: which runs an experiment needs, their keys, and the JSONL records.

Layer 3, below :mod:`helpers.reference` (which runs the plan and computes the verdicts). A run's key is a
hash of its settings, so a run stored for one experiment serves every experiment that needs the same
settings. Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import time
from dataclasses import fields
from pathlib import Path

from .claims import EXPERIMENTS, Experiment, experiment
from .experiments import untuned_scores
from .settings import TrainConfig
from .stopping import train_with_test_curve
from .training import prepare_task, train

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


def plan(exp: Experiment, smoke: bool = False, seeds: tuple | None = None) -> list[dict]:
    """Every run of ``exp``: ``{experiment, arm, rate, seed, config, key}``, seeds outermost (paired order).

    ``seeds``: other seeds than ``exp.seeds`` (e.g. its ``best_seeds``), at every rate.
    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    seeds = seeds if seeds is not None else (exp.seeds[:2] if smoke else exp.seeds)
    rates = (exp.rates[:2] if smoke else exp.rates) or (None,)
    runs = []
    for seed in seeds:
        for rate in rates:
            for arm in exp.arms:
                cfg = run_config(exp, arm, rate, seed, smoke)
                runs.append({"experiment": exp.key, "arm": arm, "rate": cfg.learning_rate, "seed": seed,
                             "config": cfg, "key": exp_run_key(exp, cfg), "test_curve": bool(exp.replay)})
    return runs


def run_key(cfg: TrainConfig, device: str | None = None, test_curve: bool = False) -> str:
    """A stable id of a run's settings: runs with the same settings are one run, whichever experiment asks.
    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).

    The device is not part of the settings, so a run made on a GPU serves a CPU's plan too, except for
    experiments about one kind of device (``Experiment.device``, e.g. bf16 on the CPU): their keys
    carry ``device``, so a GPU run of the same settings never stands in for the CPU's. ``test_curve``:
    a run that also logged the test score at every evaluation (stopping rules are replayed on it); a run
    of the same settings without that log cannot stand in for it.
    """
    d = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in ("output_dir", "device")}
    if device:
        d["device_kind"] = device
    if test_curve:
        d["test_curve"] = True
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def exp_run_key(exp: Experiment, cfg: TrainConfig, device: str | None = None) -> str:
    """:func:`run_key` of one run of ``exp`` (its device and test-curve flags); ``device`` overrides the experiment's.

    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    return run_key(cfg, device or exp.device, bool(exp.replay))


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
    return exp_run_key(exp, cfg, device_kind(rec))


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


def train_and_store(todo: list[dict], path: Path, label: str, progress: bool = True, log=print) -> int:
    """Train each planned run of ``todo`` and append its record to ``path`` as it finishes (a Ctrl-C keeps every
    finished run); returns how many ran. Reference runs (notebooks 00-05) and the subset transfer (notebook 06)."""
    for i, run in enumerate(todo, 1):
        if run.get("test_curve"):  # stopping rules are replayed on this run: log the test score at every evaluation
            cfg = run["config"]
            result = train_with_test_curve(cfg, prepare_task(cfg), progress=progress)
        else:
            result = train(run["config"], progress=progress)
        if result.stop_reason == "interrupted":
            raise KeyboardInterrupt
        append_record(path, record_of(run, result))
        log(f"[{label}] {i}/{len(todo)} {run['arm']} rate={run['rate']:g} seed={run['seed']}: "
            f"dev {result.dev_metric:.4f} test {result.test_metric:.4f} ({result.wall_time:.0f} s, {result.precision})")
    return len(todo)


def config_ident(config: dict, drop=("device", "output_dir", "precision")) -> str:
    """A stored run's settings as one JSON string, without what may differ between two machines or processes of
    the same run (``drop``): equal strings, same settings. Used by the recipe's reruns (notebook 07) and the subset
    transfer (notebook 06)."""
    return json.dumps({k: v for k, v in config.items() if k not in drop}, sort_keys=True, default=_json_default)


def config_from_record(config: dict) -> TrainConfig:
    """A record's stored settings back as a TrainConfig (JSON lists become tuples again) (notebook 06)."""
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k in names})


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
        **({"test_curve": {str(k): v for k, v in result.test_curve.items()}} if getattr(result, "test_curve", None)
           else {}),
    }


def untuned_record(cfg: TrainConfig) -> dict:
    """Score the untuned model on the regime's dev and test splits (one record per regime).

    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    rc = cfg.resolved()
    task = prepare_task(rc)
    start = time.perf_counter()  # loading the model and scoring both splits
    scores = untuned_scores(rc, task)
    dev, test = scores["dev"], scores["test"]
    return {"schema": SCHEMA, "kind": "untuned", "key": untuned_key(cfg), "task": rc.task, "metric": task.metric,
            "config": {k: getattr(rc, k) for k in ("model", "task", "train_size", "dev_size", "test_size",
                                                      "max_seq_length")},
            "metrics": {"dev": dev, "test": test}, "wall_s": time.perf_counter() - start,
            "versions": provenance(), "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def device_kind(record: dict) -> str:
    """``cuda``, ``mps`` or ``cpu``: the kind of device a record was trained on (``cuda:0`` -> ``cuda``).

    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    return str(record.get("device") or "cpu").split(":")[0]
