"""Does the subset's ranking hold on more data, and what did the search cost? (notebook 06).

Experiments layer, on top of :mod:`helpers.tuning`: the best and worst trials
are re-run on more training data (:func:`transfer_check`), their rankings
compared (:func:`rank_correlation`), and the search's cost measured against an
estimate for the larger data (:func:`cost_comparison`, :func:`pruning_savings`).
"""
from __future__ import annotations

import math
from pathlib import Path

from .batching import steps_per_epoch
from .refstore import config_from_record, config_ident, load_records, run_key, store_path, train_and_store
from .settings import TrainConfig
from .training import train
from .tuning import SPACE, config_from_params, finished, subset_score


def pick_for_transfer(study, top: int = 3, bottom: int = 2) -> tuple[list, list]:
    """The ``top`` best completed trials and the ``bottom`` worst other finished ones (pruned included), best first
    (notebook 06)."""
    from optuna.trial import TrialState

    done = [t for t in finished(study) if math.isfinite(subset_score(t))]
    complete = sorted((t for t in done if t.state == TrialState.COMPLETE), key=subset_score, reverse=True)
    best = complete[:top]
    rest = sorted((t for t in done if t not in best), key=subset_score)
    worst = rest[:bottom]
    return best, sorted(worst, key=subset_score, reverse=True)


def transfer_counts(n_trials: int) -> tuple[int, int]:
    """How many top and bottom trials the transfer check re-runs: (3, 2) for 10+ trials, else (2, 2) (notebook 06)."""
    return (3, 2) if n_trials >= 10 else (2, 2)


def transfer_check(trials, base: TrainConfig, data, space: dict = SPACE, progress: bool = True) -> dict:
    """Re-run each trial's configuration on ``data`` (more training pairs), test score included.

    Returns ``{trial number: TrainResult}`` (models dropped). Notebook 06.
    """
    from tqdm.auto import tqdm

    base = base.replace(final_test=True, output_dir=None)
    out = {}
    for t in tqdm(trials, desc="transfer runs", unit="run", disable=not progress):
        r = train(config_from_params(base, t.params, space), data=data, progress=False)
        r.model = None
        out[t.number] = r
    return out


def rank_correlation(trials, results: dict, key: str = "test") -> tuple[float, float]:
    """Spearman rank correlation (and its p-value) between subset scores and the re-runs' ``key`` scores
    (notebook 06)."""
    from scipy.stats import spearmanr

    xs = [subset_score(t) for t in trials]
    ys = [results[t.number].summary()[key] for t in trials]
    rho, p = spearmanr(xs, ys)
    return float(rho), float(p)


def cost_comparison(study, trials, results: dict) -> dict:
    """Measured seconds of the subset search against an estimate for the same trials on the larger data (notebook 06).

    The multiplier is measured: for the re-run trials that completed on the
    subset, the larger run's seconds over the subset trial's seconds (fixed
    costs such as loading and evaluating do not grow with the data, so it is
    below the data ratio). Pruned trials are assumed pruned at the same point.
    """
    from optuna.trial import TrialState

    done = finished(study)
    subset_s = sum(t.user_attrs.get("wall_s", 0.0) for t in done)
    ratios = [results[t.number].wall_time / t.user_attrs["wall_s"] for t in trials
              if t.state == TrialState.COMPLETE and t.user_attrs.get("wall_s")]
    n_sub = next((t.user_attrs["train_examples"] for t in done if t.user_attrs.get("train_examples")), 0)
    n_big = next(iter(results.values())).train_examples if results else 0
    mult = sum(ratios) / len(ratios) if ratios else (n_big / n_sub if n_sub else float("nan"))
    return {"trials": len(done), "pruned": sum(t.state == TrialState.PRUNED for t in done),
            "subset pairs": n_sub, "larger pairs": n_big, "subset search s": subset_s,
            "measured multiplier": mult, "estimated larger-data search s": subset_s * mult,
            "transfer re-runs s": sum(r.wall_time for r in results.values())}


def transfer_table(trials, results: dict, untuned: dict | None = None):
    """One row per re-run trial: its subset score and state, and the larger run's dev and test scores and seconds
    (notebook 06).

    ``untuned``: ``{"dev", "test"}`` of the model before any training (:func:`helpers.experiments.untuned_scores`),
    added as a last row, the line every re-run must beat.
    """
    import pandas as pd

    rows = [{"trial": t.number, "on the subset": t.state.name.lower(), "subset score": round(subset_score(t), 4),
             "larger data: dev": round(results[t.number].dev_metric, 4),
             "larger data: test": round(results[t.number].test_metric, 4),
             "seconds": round(results[t.number].wall_time, 1)} for t in trials]
    if untuned is not None:
        rows.append({"trial": "untuned", "on the subset": "", "subset score": float("nan"),
                     "larger data: dev": round(untuned["dev"], 4), "larger data: test": round(untuned["test"], 4),
                     "seconds": float("nan")})
    return pd.DataFrame(rows).set_index("trial")


def pruning_savings(study, epochs: float) -> dict:
    """Optimizer steps the trials ran against the steps they would have run without pruning (notebook 06)."""
    ran = planned = 0
    for t in finished(study):
        n, batch = t.user_attrs.get("train_examples"), t.params.get("batch_size")
        if not n or not batch:
            continue
        ran += t.user_attrs.get("steps", 0)
        planned += math.ceil(steps_per_epoch(n, batch) * epochs)
    return {"steps run": ran, "steps without pruning": planned, "saved": 1 - ran / planned if planned else 0.0}


# ---------------------------------------------------------------------------- does a subset rank like all the data?
# Issue: the recipe's search. The STS-B reference runs above trained many configurations on all 5,749 pairs; the
# same configurations trained on a seeded share of the pairs say whether a subset ranks them as the full data does.
SUBSET_TRANSFER = "subset_transfer"  # the records' experiment name (stored with notebook 06)
TRANSFER_SOURCES = ("schedule", "warmup", "cosine", "freezing", "batch", "weight_decay", "losses")
STSB_TRAIN_PAIRS = 5749


def _config_ident(cfg: dict) -> str:
    """The settings of a run, seed aside: every stored seed of one configuration shares it."""
    return config_ident(cfg, drop=("device", "output_dir", "precision", "seed"))


def transfer_sources(records: dict, seed: int = 0) -> list[dict]:
    """One stored full-data STS-B run per distinct configuration (seed ``seed``; a CPU run where there are two), from
    the reference experiments in :data:`TRANSFER_SOURCES`, one epoch only (notebook 06's transfer question)."""
    by_config: dict[str, dict] = {}
    for rec in _full_runs(records):
        if rec.get("seed") != seed:
            continue
        ident = _config_ident(rec["config"])
        if ident not in by_config or rec.get("device") == "cpu":
            by_config[ident] = rec
    return sorted(by_config.values(), key=lambda r: (r["experiment"], r["arm"], r["rate"]))


def _full_runs(records: dict) -> list[dict]:
    out = []
    for rec in records.values():
        cfg = rec.get("config") or {}
        if (rec.get("kind") == "run" and rec.get("experiment") in TRANSFER_SOURCES and cfg.get("task") == "stsb"
                and cfg.get("train_size") in (None, "all") and cfg.get("epochs") == 1):
            out.append(rec)
    return out


def subset_transfer_plan(records: dict, fraction: float = 0.1, seed: int = 0) -> list[dict]:
    """The subset runs that mirror :func:`transfer_sources`: the same settings on ``fraction`` of the training pairs
    (the same seeded pairs for every configuration), scored on the same dev split, no test score (notebook 06)."""
    out = []
    for src in transfer_sources(records, seed):
        cfg = config_from_record(src["config"]).replace(
            train_size=max(32, round(fraction * STSB_TRAIN_PAIRS)), evals_per_epoch=1, final_test=False,
            device=None, output_dir=None)
        out.append({"experiment": SUBSET_TRANSFER, "arm": f"{src['experiment']}: {src['arm']}", "rate": src["rate"],
                    "seed": seed, "config": cfg, "key": run_key(cfg), "source": src["key"], "fraction": fraction})
    return out


def run_subset_transfer(fraction: float = 0.1, store: Path | None = None, progress: bool = True, log=print) -> int:
    """Train every missing subset run of :func:`subset_transfer_plan` (resumable, one JSON line each): notebook 06's
    reference cell, run by ``python -m helpers.reference --subset-transfer FRACTION``."""
    records = load_records(store)
    runs = subset_transfer_plan(records, fraction)
    todo = [r for r in runs if r["key"] not in records]
    log(f"[{SUBSET_TRANSFER}] {len(runs) - len(todo)} of {len(runs)} subset runs ({fraction:.0%}) stored; "
        f"{len(todo)} to run")
    return train_and_store(todo, store_path("06_search_on_a_subset", store), SUBSET_TRANSFER, progress, log)


def subset_transfer_table(fraction: float = 0.1, store: Path | None = None, records: dict | None = None):
    """Each configuration's dev score after training on the subset next to its scores on all the data (mean over
    every stored seed), and in ``.attrs`` the rank correlations and the compute the subset took (notebook 06).

    ``steps share``: the subset runs' optimizer steps over the full runs'. ``wall share``: their seconds over the
    seconds of the full runs of the same configurations on the same kind of device (None where there are none).
    """
    import numpy as np
    import pandas as pd
    from scipy.stats import spearmanr

    records = load_records(store) if records is None else records
    groups: dict[str, list[dict]] = {}
    for rec in _full_runs(records):
        groups.setdefault(_config_ident(rec["config"]), []).append(rec)
    rows, sub_s, full_s = [], 0.0, 0.0
    for run in subset_transfer_plan(records, fraction):
        sub, src = records.get(run["key"]), records[run["source"]]
        if sub is None:
            continue
        full = groups[_config_ident(src["config"])]
        same = [r["wall_s"] for r in full if r.get("device") == sub.get("device") and "timing" not in r]
        if same:
            sub_s, full_s = sub_s + sub["wall_s"], full_s + float(np.mean(same))
        rows.append({"configuration": run["arm"], "rate": run["rate"], "subset dev": sub["metrics"]["dev"],
                     "full dev": float(np.mean([r["metrics"]["dev"] for r in full])),
                     "full test": float(np.mean([r["metrics"]["test"] for r in full])), "full seeds": len(full),
                     "subset steps": sub["metrics"]["steps"], "full steps": src["metrics"]["steps"],
                     "subset s": sub["wall_s"]})
    table = pd.DataFrame(rows)
    table.attrs["configurations"] = len(table)
    if len(table) >= 3:
        table.attrs["rho vs full test"] = float(spearmanr(table["subset dev"], table["full test"])[0])
        table.attrs["rho vs full dev"] = float(spearmanr(table["subset dev"], table["full dev"])[0])
        table.attrs["steps share"] = float(table["subset steps"].sum() / table["full steps"].sum())
        table.attrs["wall share"] = sub_s / full_s if full_s else None
    return table


def dev_test_table(store: Path | None = None, records: dict | None = None):
    """Every stored one-epoch configuration on all the STS-B pairs with its mean dev and test Spearman over the
    stored seeds, best on dev first; ``.attrs["rho"]``: the rank correlation of the two (notebook 07: would a
    search that picks on dev pick what wins on test?)."""
    import numpy as np
    import pandas as pd
    from scipy.stats import spearmanr

    records = load_records(store) if records is None else records
    groups: dict[str, list[dict]] = {}
    for rec in _full_runs(records):
        groups.setdefault(_config_ident(rec["config"]), []).append(rec)
    rows = []
    for recs in groups.values():
        first = min(recs, key=lambda r: r["seed"])
        rows.append({"configuration": f"{first['experiment']}: {first['arm']}", "rate": first["rate"],
                     "dev": float(np.mean([r["metrics"]["dev"] for r in recs])),
                     "test": float(np.mean([r["metrics"]["test"] for r in recs])), "seeds": len(recs)})
    table = pd.DataFrame(rows, columns=["configuration", "rate", "dev", "test", "seeds"])
    table = table.sort_values("dev", ascending=False).reset_index(drop=True)
    table["rank on test"] = table["test"].rank(ascending=False, method="min").astype(int)
    table.attrs["rho"] = float(spearmanr(table["dev"], table["test"])[0]) if len(table) >= 3 else None
    return table


def dev_test_summary(table) -> str:
    """What :func:`dev_test_table` found, in a sentence (notebook 07)."""
    if table.attrs.get("rho") is None:
        return f"{len(table)} one-epoch configurations stored; at least 3 are needed."
    top, best = table.iloc[0], table.loc[table["test"].idxmax()]
    return (f"{len(table)} one-epoch configurations on all the STS-B pairs: dev and test Spearman rank them with a "
            f"rank correlation of {table.attrs['rho']:.2f}. The best on dev ({top['configuration']} at "
            f"{top['rate']:g}: dev {top['dev']:.4f}) is {int(top['rank on test'])} of {len(table)} on test "
            f"({top['test']:.4f}); the best on test is {best['configuration']} at {best['rate']:g} "
            f"({best['test']:.4f}).")


def subset_transfer_summary(table, fraction: float = 0.1) -> str:
    """What :func:`subset_transfer_table` found, in a sentence (notebook 06's reference cell)."""
    n = table.attrs.get("configurations", 0)
    if n < 3:
        return (f"{n} subset runs stored ({fraction:.0%} of STS-B); at least 3 are needed. "
                f"`python -m helpers.reference --subset-transfer {fraction:g}` runs them (about 30 s each on 2 CPU "
                f"cores), resumably.")
    a = table.attrs
    wall = f" and {a['wall share']:.0%} of their time on the same device" if a.get("wall share") is not None else ""
    top = {col: float(table.nlargest(5, col)["rate"].median()) for col in ("subset dev", "full test")}
    return (f"{n} configurations trained on {fraction:.0%} of the STS-B training pairs (one seed) and on all of them "
            f"(mean over the stored seeds): the subset's dev Spearman ranks them with a rank correlation of "
            f"{a['rho vs full test']:.2f} against the full runs' test Spearman ({a['rho vs full dev']:.2f} against "
            f"their dev Spearman). The subset runs took {a['steps share']:.0%} of the full runs' optimizer steps{wall}. "
            f"Median peak rate of the five best: {top['subset dev']:.1e} on the subset, {top['full test']:.1e} on all "
            f"the data.")


__all__ = ["pick_for_transfer", "transfer_counts", "transfer_check", "rank_correlation", "cost_comparison",
           "transfer_table", "pruning_savings",
           "transfer_sources", "subset_transfer_plan", "run_subset_transfer", "subset_transfer_table",
           "subset_transfer_summary", "dev_test_table", "dev_test_summary", "SUBSET_TRANSFER"]
