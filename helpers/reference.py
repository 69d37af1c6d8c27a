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
import sys
from pathlib import Path

from .claims import CLAIMS, EXPERIMENTS, Claim, Experiment, claim, experiment
from .refstore import (REFERENCE_DIR, SCHEMA, SMOKE, UNTUNED_FIELDS, append_record, device_kind,  # noqa: F401
                       exp_run_key, load_records, plan, record_of, run_config, run_key, store_path, train_and_store, untuned_key,
                       untuned_record)
from .stopping import replay
from .verdicts import compare, default_margin, judge, verdict


def run_experiment(exp: Experiment, store: Path | None = None, smoke: bool = False, progress: bool = True,
                   log=print, best_only: bool = False) -> int:
    """Run every unfinished run of ``exp`` (untuned score first); returns how many ran now.

    ``best_only``: only the runs at each arm's current best dev rate (:func:`at_best_rates`), the
    ones that complete the paired comparisons behind the claims; the other rates wait.
    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    path = store_path(exp.notebook, store)
    done = load_records(store)
    runs = at_best_rates(exp, done, smoke) if best_only else plan(exp, smoke)
    first = runs[0]["config"]
    if untuned_key(first) not in done:
        rec = untuned_record(first)
        append_record(path, rec)
        log(f"[{exp.key}] untuned: dev {rec['metrics']['dev']:.4f}, test {rec['metrics']['test']:.4f}")
    ran = _run_all(exp, [r for r in runs if r["key"] not in done], path, len(runs), progress, log)
    if exp.best_seeds and not smoke:  # chosen once the main seeds' runs are in
        done = load_records(store)
        extra = at_best_rates(exp, done, seeds=exp.best_seeds)
        ran += _run_all(exp, [r for r in extra if r["key"] not in done], path, len(extra), progress, log,
                        what="runs at the best rates with more seeds")
    return ran


def _run_all(exp: Experiment, todo: list[dict], path: Path, planned: int, progress: bool, log,
             what: str = "runs") -> int:
    """Train and store each run of ``todo`` (one JSON line each, as it finishes); returns how many ran."""
    log(f"[{exp.key}] {planned - len(todo)} of {planned} {what} already stored; {len(todo)} to run")
    return train_and_store(todo, path, exp.key, progress, log)


def at_best_rates(exp: Experiment, records: dict, smoke: bool = False, seeds: tuple | None = None) -> list[dict]:
    """The runs of ``exp`` at each arm's best dev rate so far (every rate where an arm has no record yet).

    Where an arm's rate is still open, these are the runs that decide a claim soonest: a paired
    comparison uses each arm at its best rate only. ``seeds``: other seeds than the main ones (an
    experiment's ``best_seeds``). Reference runs: every notebook's "Reference verdicts" section
    (notebooks 00-05); ``make reference BEST_FIRST=1``.
    """
    best = {arm: best_rate(exp, arm, records, smoke=smoke)[0] for arm in exp.arms}
    wanted = set(best.items())
    for c in CLAIMS:  # a claim that pits an arm's in-range best against a fixed high rate needs both
        if c.experiment == exp.key and "b_rate" in c.extra:
            wanted |= {(c.a, c.extra["b_rate"]), (c.a, best_rate(exp, c.a, records, c.extra["a_rates"], smoke)[0])}
    return [r for r in plan(exp, smoke, seeds) if best[r["arm"]] is None or (r["arm"], r["rate"]) in wanted]


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
def arm_runs(exp: Experiment, arm: str, rate: float | None, records: dict, smoke: bool = False,
             main_only: bool = False) -> list[dict]:
    """The stored records of one arm at one rate, one per seed (missing seeds left out): the main seeds,
    then the ``best_seeds`` unless ``main_only`` (rates are chosen and compared on the main seeds alone,
    which every rate has).

    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    if arm in exp.replay:
        return replayed_runs(exp, arm, records, smoke, main_only)
    out = []
    for seed in all_seeds(exp, smoke, main_only):
        rec = records.get(exp_run_key(exp, run_config(exp, arm, rate, seed, smoke)))
        if rec is not None:
            out.append({"seed": seed, "test": rec["metrics"]["test"], "dev": rec["metrics"]["dev"],
                        "wall_s": rec["wall_s"], "record": rec})
    return out


def replayed_runs(exp: Experiment, arm: str, records: dict, smoke: bool = False, main_only: bool = False) -> list[dict]:
    """A replayed arm of ``exp`` (``Experiment.replay``): its stopping rule replayed on each seed's run trained to
    the end, scored by the test score logged at the checkpoint the rule keeps (``"end"``: the last checkpoint).

    ``wall_s`` is the run's wall time scaled by the share of steps trained before the stop. Reference runs:
    notebook 04's "Reference verdicts" section.
    """
    trained = next(iter(exp.arms))
    rule = exp.replay[arm]
    out = []
    for seed in all_seeds(exp, smoke, main_only):
        rec = records.get(exp_run_key(exp, run_config(exp, trained, None, seed, smoke)))
        if rec is None or "test_curve" not in rec:
            continue
        if rule == "end":
            row = {"test": rec["metrics"]["test"], "dev": rec["metrics"]["dev"], "wall_s": rec["wall_s"]}
        else:
            name, signal = rule.rsplit(" on ", 1)
            rp = replay(rec["evals"], name, signal, test=rec["test_curve"], total_steps=rec["metrics"]["steps"])
            row = {"test": rp.kept_test, "dev": rp.kept_dev, "wall_s": rec["wall_s"] * rp.compute,
                   "kept_step": rp.kept_step, "stop_step": rp.stop_step}
        out.append({"seed": seed, **row, "record": rec})
    return out


def all_seeds(exp: Experiment, smoke: bool = False, main_only: bool = False) -> tuple:
    """The seeds of ``exp``: the main ones and, unless ``main_only`` or ``smoke``, its ``best_seeds``.

    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    if smoke:
        return exp.seeds[:2]
    return exp.seeds if main_only else exp.seeds + tuple(s for s in exp.best_seeds if s not in exp.seeds)


def same_device_pairs(a_runs: list[dict], b_runs: list[dict]) -> tuple[list[dict], list[dict]]:
    """The seeds both arms ran on the same kind of device, in seed order (a pair never mixes a GPU and a CPU run:
    their kernels differ, so such a difference would be partly the device's).

    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-07).
    """
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
        runs = arm_runs(exp, arm, r, records, smoke, main_only=True)
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
    untuned = untuned_for(exp, records, python, smoke)
    metric = a_runs[0]["record"].get("metric", "Spearman")
    a_label = a_name if ra is None else f"{a_name} @ {ra:g}"
    b_label = b_name if rb is None else f"{b_name} @ {rb:g}"
    return compare(a_label, a_runs, b_label, b_runs, key=c.key_metric, metric=metric,
                   margin=default_margin(metric), untuned=untuned["metrics"][c.key_metric] if untuned else None)


def untuned_for(exp: Experiment, records: dict, python: str | None = None, smoke: bool = False) -> dict | None:
    """The stored untuned record of ``exp``'s regime (its data, sizes and sequence length are the same for every arm),
    or ``None``. Reference runs: every notebook's "Reference verdicts" section (notebooks 00-07)."""
    return records.get(untuned_key(run_config(exp, next(iter(exp.arms)), None, 0, smoke), python))


def replay_check(replayed: str = "stopping_replay", real: str = "stopping", store: Path | None = None,
                 records: dict | None = None):
    """Each replayed arm against the real run of the same arm and seed, where both are stored: the test score that
    the trainer's early stopping kept, the replayed one, and whether they agree to 1e-4 (pandas).

    A replay stands in for a real run only where the two agree. Reference runs: notebook 04's "Reference verdicts"
    section.
    """
    import pandas as pd

    records = load_records(store) if records is None else records
    rep, exp = experiment(replayed), experiment(real)
    rows = []
    for arm in rep.replay:
        real_runs = {r["seed"]: r for r in arm_runs(exp, arm, None, records)}
        for r in replayed_runs(rep, arm, records):
            if r["seed"] in real_runs:
                got = real_runs[r["seed"]]["test"]
                rows.append({"arm": arm, "seed": r["seed"], "real run": got, "replayed": r["test"],
                             "agree": abs(got - r["test"]) < 1e-4})
    return pd.DataFrame(rows, columns=["arm", "seed", "real run", "replayed", "agree"])


def experiment_records(exp: Experiment, records: dict, smoke: bool = False) -> list[dict]:
    """The stored records that belong to ``exp`` (also those first run for another experiment).

    Reference runs: every notebook's "Reference verdicts" section (notebooks 00-05).
    """
    keys = {r["key"] for r in plan(exp, smoke, all_seeds(exp, smoke))}
    return [r for r in records.values() if r.get("kind") == "run" and r["key"] in keys]


def rate_table(key: str, store: Path | None = None, records: dict | None = None, smoke: bool = False):
    """Each arm at each rate of experiment ``key``: seeds, mean dev and test scores, their ranges, and whether it
    is the arm's best rate on dev (the one its claims use); ``untuned`` in ``attrs``.

    Data of the isolation plot (:func:`helpers.plots.plot_rate_isolation`) in notebooks 01, 02, 03 and 05's
    "Reference verdicts" sections.
    """
    import pandas as pd

    records = load_records(store) if records is None else records
    exp = experiment(key)
    rows, first = [], None
    for arm in exp.arms:
        best, _ = best_rate(exp, arm, records, smoke=smoke)
        for rate in (exp.rates[:2] if smoke else exp.rates) or (None,):
            runs = arm_runs(exp, arm, rate, records, smoke, main_only=True)  # every rate on the same seeds
            if not runs:
                continue
            first = first or runs[0]["record"]
            dev, test = [r["dev"] for r in runs], [r["test"] for r in runs]
            rows.append({"arm": arm, "rate": runs[0]["record"]["rate"], "seeds": len(runs), "dev": sum(dev) / len(dev),
                         "dev min": min(dev), "dev max": max(dev), "test": sum(test) / len(test),
                         "test min": min(test), "test max": max(test), "best on dev": rate == best})
    table = pd.DataFrame(rows)
    python = first.get("versions", {}).get("python") if first else None
    untuned = untuned_for(exp, records, python, smoke)
    table.attrs.update(experiment=key, question=exp.question, untuned=untuned["metrics"] if untuned else None,
                       metric=first.get("metric", "score") if first else "score")
    return table


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
    p.add_argument("--best-first", action="store_true",
                   help="first the runs at each arm's best rate so far (they decide the claims), then the rest")
    p.add_argument("--subset-transfer", type=float, metavar="FRACTION",
                   help="train the stored full-data STS-B configurations again on FRACTION of the pairs (e.g. 0.1) "
                        "and print how well the subset ranks them (rank correlation, compute share)")
    args = p.parse_args(argv)
    if args.subset_transfer is not None:
        from .transfer import run_subset_transfer, subset_transfer_table

        try:
            run_subset_transfer(args.subset_transfer, args.store, progress=sys.stderr.isatty())
        except KeyboardInterrupt:
            print("interrupted: finished runs are stored; rerun the same command to go on.", file=sys.stderr)
            return 130
        t = subset_transfer_table(args.subset_transfer, args.store)
        print(t.round(4).to_string(index=False))
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in t.attrs.items()})
        return 0
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
            extra = at_best_rates(e, records, seeds=e.best_seeds) if e.best_seeds and not args.smoke else []
            more = (f" + {sum(r['key'] in records for r in extra)}/{len(extra)} at the best rates with seeds "
                    f"{','.join(map(str, e.best_seeds))}") if extra else ""
            print(f"{e.priority} {e.key:16s} {e.notebook:34s} {done:3d}/{len(runs):3d} runs stored{more}  {e.question}")
        return 0
    try:
        if args.best_first:
            for e in exps:
                run_experiment(e, args.store, args.smoke, progress=sys.stderr.isatty(), best_only=True)
        for e in exps:
            run_experiment(e, args.store, args.smoke, progress=sys.stderr.isatty())
    except KeyboardInterrupt:
        print("interrupted: finished runs are stored; rerun the same command to go on.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
