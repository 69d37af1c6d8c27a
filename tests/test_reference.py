"""The reference store: its schema, resumable runs, exact reproduction, and verdicts computed from records."""
import json
from dataclasses import fields

import pytest

from helpers import claims as C
from helpers import reference as R
from helpers.training import TrainConfig

RUN_FIELDS = {"schema", "kind", "key", "experiment", "arm", "rate", "seed", "config", "metrics", "metric", "evals",
              "wall_s", "steps_per_s", "peak_mb", "device", "precision", "versions", "finished"}
VERSION_FIELDS = {"torch", "transformers", "sentence_transformers", "python", "commit"}


def check_record(rec: dict) -> None:
    assert rec["schema"] == R.SCHEMA
    if rec["kind"] == "untuned":
        assert {"dev", "test"} <= set(rec["metrics"]) and VERSION_FIELDS <= set(rec["versions"])
        return
    assert rec["kind"] == "run" and RUN_FIELDS <= set(rec)
    assert VERSION_FIELDS <= set(rec["versions"])
    assert {"dev", "dev_start", "test", "steps", "stop"} <= set(rec["metrics"])
    known = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in rec["config"].items() if k in known})
    assert set(rec["config"]) <= known, "a stored setting that today's TrainConfig no longer has"
    assert cfg.seed == rec["seed"] and cfg.learning_rate == pytest.approx(rec["rate"])
    assert rec["precision"] in ("fp32", "bf16", "fp16") and rec["config"]["precision"] == rec["precision"]
    assert all({"step", "metric"} <= set(e) for e in rec["evals"])


def test_every_stored_record_fits_the_schema_and_todays_trainconfig():
    records = R.load_records()
    for rec in records.values():
        check_record(rec)
    for path in R.REFERENCE_DIR.glob("*.jsonl"):  # every line is whole JSON (an interrupted run never half-writes)
        for line in path.read_text(encoding="utf-8").splitlines():
            json.loads(line)


def test_claims_name_real_experiments_and_arms():
    for c in C.CLAIMS:
        e = C.experiment(c.experiment)
        arms = set(e.arms) | set(e.replay)
        assert c.a in arms and (c.b in arms or "b_rate" in c.extra), c.key
        assert c.expect in ("a_better", "b_better", "a_not_worse", "equivalent")
        assert e.notebook == c.notebook
    assert len({c.key for c in C.CLAIMS}) == len(C.CLAIMS)
    for e in C.EXPERIMENTS:  # one untuned score per experiment (reference.untuned_for): no arm changes the data
        assert len({R.untuned_key(R.run_config(e, arm, None, 0)) for arm in e.arms}) == 1, e.key
    with pytest.raises(KeyError, match="known: precision"):
        C.experiment("nope")


def test_plan_pairs_seeds_and_shares_identical_runs_across_experiments():
    sched, warm = C.experiment("schedule"), C.experiment("warmup")
    runs = R.plan(sched)
    assert len(runs) == len(sched.arms) * len(sched.rates) * len(sched.seeds)
    assert [r["seed"] for r in runs[: len(sched.arms) * len(sched.rates)]] == [0] * 6  # seeds outermost
    shared = {r["key"] for r in runs} & {r["key"] for r in R.plan(warm)}
    assert len(shared) == len(sched.rates) * len(set(sched.seeds) & set(warm.seeds))  # "linear, 10% warm-up" runs once


@pytest.mark.slow
def test_reference_smoke_runs_resume_and_reproduce_exactly(tmp_path, monkeypatch):
    exp = C.Experiment("tiny", "99_test", "two schedules", dict(C.STSB), {
        "linear": {"schedule": "linear"}, "constant": {"schedule": "constant", "warmup_fraction": 0.0}},
        rates=(2e-5, 5e-5), seeds=(0, 1))
    claim = C.Claim("tiny", "99_test", "linear beats constant", "tiny", "linear", "constant")
    monkeypatch.setattr(C, "EXPERIMENTS", [exp])
    monkeypatch.setattr(C, "CLAIMS", [claim])
    monkeypatch.setattr(R, "experiment", lambda k: exp)
    monkeypatch.setattr(R, "claim", lambda k: claim)
    logs = []
    assert R.run_experiment(exp, tmp_path / "a", smoke=True, progress=False, log=logs.append) == 8
    first = R.load_records(tmp_path / "a")
    assert len(first) == 9 and sum(r["kind"] == "untuned" for r in first.values()) == 1
    for rec in first.values():
        check_record(rec)
    assert R.run_experiment(exp, tmp_path / "a", smoke=True, progress=False, log=logs.append) == 0  # resumes
    assert "8 of 8 runs already stored; 0 to run" in logs[-1]
    # the same command in a fresh store gives the same numbers on the same machine
    R.run_experiment(exp, tmp_path / "b", smoke=True, progress=False, log=logs.append)
    second = R.load_records(tmp_path / "b")
    assert first.keys() == second.keys()
    for k in first:
        assert first[k]["metrics"] == second[k]["metrics"]
        assert first[k].get("evals") == second[k].get("evals")
    text = R.claim_verdict("tiny", tmp_path / "a", smoke=True)
    assert "Claim: linear beats constant" in text and "2 paired seeds" in text and "Stored runs: 8" in text
    assert "over the untuned model" in text and "Verdict:" in text


def test_a_claim_without_records_says_how_to_run_it(tmp_path):
    text = R.claim_verdict("avoid_constant", tmp_path)
    assert "NOT YET RUN" in text and "make reference EXPERIMENT=schedule" in text


def test_half_written_line_is_never_left(tmp_path):
    path = tmp_path / "x.jsonl"
    R.append_record(path, {"key": "a", "v": 1})
    R.append_record(path, {"key": "b", "v": (1, 2)})
    lines = path.read_text().splitlines()
    assert [json.loads(x)["key"] for x in lines] == ["a", "b"] and json.loads(lines[1])["v"] == [1, 2]


def test_cli_lists_and_refuses_unknown_experiments(capsys):
    assert R.main(["--list", "--experiment", "schedule"]) == 0
    assert "schedule" in capsys.readouterr().out
    assert R.main(["--experiment", "nope"]) == 2
    assert "No reference experiment 'nope'" in capsys.readouterr().err


def _rec(seed, test, device="cpu"):
    return {"seed": seed, "test": test, "dev": test, "wall_s": 1.0, "record": {"device": device}}


def test_a_pair_never_mixes_a_gpu_run_with_a_cpu_run():
    a = [_rec(0, 0.85, "cuda"), _rec(1, 0.86, "cuda:0"), _rec(2, 0.87, "cpu")]
    b = [_rec(0, 0.84, "cuda"), _rec(1, 0.85, "cpu"), _rec(2, 0.86, "cpu"), _rec(3, 0.9)]
    pa, pb = R.same_device_pairs(a, b)
    assert [r["seed"] for r in pa] == [r["seed"] for r in pb] == [0, 2]
    assert R.device_kind({"device": "cuda:1"}) == "cuda" and R.device_kind({}) == "cpu"


def test_untuned_keys_follow_what_the_score_depends_on():
    stsb = TrainConfig(task="stsb")
    assert R.untuned_key(stsb, "3.11.7") == R.untuned_key(stsb, "3.12.3")  # the same files on every Python
    code = TrainConfig(task="codesearch", train_size=1000, max_seq_length=64)
    assert R.untuned_key(code, "3.11.7") != R.untuned_key(code, "3.12.3")  # the stdlib differs between Pythons
    rc = code.resolved()
    stored = {k: getattr(rc, k) for k in R.UNTUNED_FIELDS}  # what an untuned record stores
    assert R.untuned_key(stored, "3.12.1") == R.untuned_key(code, "3.12.3")


def test_merging_records_from_elsewhere_is_idempotent(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("merge_reference", Path(__file__).parent.parent / "tools" /
                                                  "merge_reference.py")
    merge = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(merge)
    src = tmp_path / "gpu" / "w1"
    src.mkdir(parents=True)
    untuned = {"kind": "untuned", "key": "old", "config": {k: None for k in R.UNTUNED_FIELDS} | {"task": "stsb"},
               "versions": {"python": "3.12.3"}, "metrics": {"dev": 0.8, "test": 0.8}}
    run = {"kind": "run", "key": "k1", "experiment": "schedule", "metrics": {"dev": 0.9, "test": 0.9}}
    (src / "01_learning_rate_schedules.jsonl").write_text(json.dumps(untuned) + "\n" + json.dumps(run) + "\n")
    (tmp_path / "gpu" / "w2").mkdir()
    (tmp_path / "gpu" / "w2" / "01_learning_rate_schedules.jsonl").write_text(json.dumps(run) + "\n")  # a duplicate
    store = tmp_path / "store"
    first = merge.merge([tmp_path / "gpu"], store, note="GPU check")
    assert first == {"untuned": 1, "schedule": 1}
    assert merge.merge([tmp_path / "gpu"], store) == {}  # twice: nothing more
    records = R.load_records(store)
    assert records["k1"]["source"] == "GPU check" and len(records) == 2


def test_readme_claim_table_matches_the_stored_records():
    """The README says only what the records compute (tools/refresh_reference_outputs.py rewrites it)."""
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    shown = readme.split("<!-- claim-table -->\n", 1)[1].split("\n<!-- /claim-table -->", 1)[0]
    assert shown == R.markdown_table(R.summary_table()), \
        "README's claim table is stale: run python tools/refresh_reference_outputs.py"


def test_the_cpu_bf16_default_follows_the_stored_precision_verdicts():
    """bf16 is the CPU default exactly when both precision claims are SUPPORTED by the stored records."""
    from helpers import config

    both = all(R.claim_status(k) == "supported" for k in ("bf16", "bf16_code"))
    assert config.CPU_BF16_BY_DEFAULT == both, (
        f"CPU_BF16_BY_DEFAULT is {config.CPU_BF16_BY_DEFAULT}, but the precision verdicts are "
        f"{R.claim_status('bf16')!r} (STS-B) and {R.claim_status('bf16_code')!r} (code search)")


def test_a_gpu_run_never_stands_in_for_a_cpu_claim(tmp_path):
    """The precision experiment is about the CPU: a GPU record of the very same settings (another experiment's
    run) is not one of its runs, while a CPU record written with the plain key (before device keys) still is."""
    exp = C.experiment("precision")
    assert exp.device == "cpu" and R.run_config(exp, "bf16", None, 0).device == "cpu"
    plain = R.run_key(R.run_config(exp, "bf16", None, 0))
    rec = {"schema": R.SCHEMA, "kind": "run", "key": plain, "arm": "bf16", "rate": 2e-5, "seed": 0,
           "config": {"train_size": None}, "metrics": {"dev": 0.88, "test": 0.86}, "wall_s": 1.0}
    store = tmp_path / "store"
    R.append_record(store / "01_learning_rate_schedules.jsonl", {**rec, "experiment": "schedule", "device": "cuda"})
    assert R.arm_runs(exp, "bf16", None, R.load_records(store)) == []
    R.append_record(store / "00_quickstart.jsonl", {**rec, "experiment": "precision", "device": "cpu"})
    runs = R.arm_runs(exp, "bf16", None, R.load_records(store))
    assert [r["record"]["device"] for r in runs] == ["cpu"]
    assert R.plan(exp)[0]["key"] != plain  # new runs are stored under the device's key


def test_best_seeds_run_only_at_the_best_rate_and_never_move_the_choice(monkeypatch):
    exp = C.Experiment("tiny", "99_test", "two schedules", dict(C.STSB), {
        "linear": {"schedule": "linear"}, "constant": {"schedule": "constant", "warmup_fraction": 0.0}},
        rates=(2e-5, 5e-5), seeds=(0, 1), best_seeds=(2, 3))
    monkeypatch.setattr(C, "CLAIMS", [])

    def rec(arm, rate, seed, score):
        cfg = R.run_config(exp, arm, rate, seed)
        return R.run_key(cfg), {"metrics": {"dev": score, "test": score}, "wall_s": 1.0, "device": "cpu", "rate": rate}

    main = {"linear": {2e-5: 0.80, 5e-5: 0.85}, "constant": {2e-5: 0.84, 5e-5: 0.82}}
    records = dict(rec(arm, rate, seed, s) for arm, by in main.items() for rate, s in by.items() for seed in (0, 1))
    extra = R.at_best_rates(exp, records, seeds=exp.best_seeds)
    assert {(r["arm"], r["rate"], r["seed"]) for r in extra} == {
        ("linear", 5e-5, 2), ("linear", 5e-5, 3), ("constant", 2e-5, 2), ("constant", 2e-5, 3)}
    records.update(rec(r["arm"], r["rate"], r["seed"], 0.5) for r in extra)  # poor extra seeds
    assert R.best_rate(exp, "linear", records)[0] == 5e-5  # chosen on the main seeds only
    assert [r["seed"] for r in R.arm_runs(exp, "linear", 5e-5, records)] == [0, 1, 2, 3]
    assert [r["seed"] for r in R.arm_runs(exp, "linear", 5e-5, records, main_only=True)] == [0, 1]
    assert [r["seed"] for r in R.arm_runs(exp, "linear", 2e-5, records)] == [0, 1]


def test_subset_transfer_ranks_the_subset_runs_against_the_full_data(tmp_path):
    """Notebook 06 / the recipe's search: the same configurations on a subset, ranked against all the data."""
    import json
    from dataclasses import asdict

    from helpers import transfer as T
    from helpers.settings import TrainConfig

    full = []
    for i, rate in enumerate((2e-5, 5e-5, 1e-4)):
        cfg = asdict(TrainConfig(task="stsb", train_size="all", epochs=1, learning_rate=rate))
        for seed, test in ((0, 0.80 + i / 100), (1, 0.82 + i / 100)):
            full.append({"schema": R.SCHEMA, "kind": "run", "key": f"full-{i}-{seed}", "experiment": "schedule",
                         "arm": "linear", "rate": rate, "seed": seed, "config": dict(cfg, seed=seed),
                         "metrics": {"dev": 0.85 + i / 100, "test": test, "steps": 360}, "wall_s": 200.0,
                         "device": "cpu"})
    full.append(dict(full[0], key="other-task", config=dict(full[0]["config"], task="codesearch")))  # not STS-B
    store = tmp_path / "reference"
    store.mkdir()
    (store / "01.jsonl").write_text("".join(json.dumps(r) + "\n" for r in full))
    plan = T.subset_transfer_plan(R.load_records(store), 0.1)
    assert [p["rate"] for p in plan] == [2e-5, 5e-5, 1e-4] and {p["source"] for p in plan} == {"full-0-0", "full-1-0",
                                                                                             "full-2-0"}
    assert all(p["config"].train_size == 575 and p["config"].final_test is False for p in plan)
    assert len({p["key"] for p in plan}) == 3 and not {p["key"] for p in plan} & {r["key"] for r in full}
    assert T.subset_transfer_table(0.1, store).attrs == {"configurations": 0}  # nothing run yet
    # the subset ranks them in reverse, in a tenth of the steps and of the time
    subset = [{"schema": R.SCHEMA, "kind": "run", "key": p["key"], "experiment": T.SUBSET_TRANSFER,
               "arm": p["arm"], "rate": p["rate"], "seed": 0, "config": {}, "device": "cpu", "wall_s": 20.0,
               "metrics": {"dev": 0.9 - i / 100, "steps": 36}} for i, p in enumerate(plan)]
    (store / "06.jsonl").write_text("".join(json.dumps(r) + "\n" for r in subset))
    table = T.subset_transfer_table(0.1, store)
    assert list(table["full seeds"]) == [2, 2, 2] and list(table["full test"].round(4)) == [0.81, 0.82, 0.83]
    assert table.attrs["rho vs full test"] == pytest.approx(-1.0) and table.attrs["rho vs full dev"] == pytest.approx(-1)
    assert table.attrs["steps share"] == pytest.approx(0.1) and table.attrs["wall share"] == pytest.approx(0.1)
    line = T.subset_transfer_summary(table)
    assert "3 configurations" in line and "rank correlation of -1.00" in line and "10% of their time" in line
    assert "Median peak rate of the five best: 5.0e-05 on the subset, 5.0e-05 on all the data" in line
    assert "--subset-transfer 0.1" in T.subset_transfer_summary(T.subset_transfer_table(0.1, tmp_path / "none"))


REPLAY = C.Experiment("tiny_replay", "99_test", "stopping rules replayed", dict(C.CODE_SMALL, eval_loss=True),
                      {"trained to the end": {}}, seeds=(0, 1),
                      replay={"metric": "patience 3 on metric", "loss": "patience 3 on loss", "end": "end"})


def test_replayed_arms_keep_what_the_rule_keeps_on_each_seeds_run(monkeypatch):
    """Notebook 04's reference: each rule replayed on a stored run trained to the end, scored by its test curve."""
    exp = REPLAY
    plain = R.run_key(R.run_config(exp, "trained to the end", None, 0))
    assert R.plan(exp)[0]["key"] != plain and R.plan(exp)[0]["test_curve"]  # a run without the curve never stands in
    metric = [0.70, 0.75, 0.74, 0.73, 0.72, 0.71]  # best at step 4, patience 3 fires at step 16
    loss = [0.80, 0.70, 0.72, 0.74, 0.76, 0.78]  # best at step 4 too, fires at step 16
    records = {}
    for seed, shift in ((0, 0.0), (1, 0.01)):
        evals = [{"step": 4 * i, "metric": m + shift, "loss": l} for i, (m, l) in enumerate(zip(metric, loss))]
        test = {str(4 * i): 0.60 + i / 100 + shift for i in range(6)}
        key = R.plan(exp)[seed]["key"]
        records[key] = {"key": key, "kind": "run", "seed": seed, "evals": evals, "test_curve": test, "wall_s": 100.0,
                        "metrics": {"dev": evals[-1]["metric"], "test": test["20"], "steps": 20}, "device": "cpu",
                        "precision": "bf16", "versions": {"commit": "abc1234"}, "metric": "nDCG@10"}
    kept = R.replayed_runs(exp, "metric", records)
    assert [r["seed"] for r in kept] == [0, 1] and [r["kept_step"] for r in kept] == [4, 4]
    assert [r["test"] for r in kept] == pytest.approx([0.61, 0.62]) and kept[0]["stop_step"] == 16
    assert kept[0]["wall_s"] == pytest.approx(80.0)  # 16 of 20 steps
    assert [r["test"] for r in R.replayed_runs(exp, "end", records)] == pytest.approx([0.65, 0.66])
    assert R.arm_runs(exp, "loss", None, records)[0]["kept_step"] == 4
    claim = C.Claim("tiny_replay", "99_test", "stopping beats the end", "tiny_replay", "metric", "end")
    monkeypatch.setattr(R, "experiment", lambda k: exp)
    monkeypatch.setattr(R, "claim", lambda k: claim)
    text = R.claim_verdict("tiny_replay", records=records)  # the verdict reads the replayed arms
    assert "metric 0.6150 vs end 0.6550" in text and "2 paired seeds" in text and "Stored runs: 2" in text
    del records[R.plan(exp)[1]["key"]]["test_curve"]  # a run without its test curve cannot be replayed
    assert [r["seed"] for r in R.replayed_runs(exp, "metric", records)] == [0]


def test_replays_agree_with_the_real_early_stopped_runs():
    """The stored replays stand in for real early stopping: seed by seed, the trainer's own EarlyStoppingCallback kept
    the same test score (experiment 'stopping' against 'stopping_replay')."""
    check = R.replay_check()
    assert len(check) >= 9, "too few seeds with both a real and a replayed run"
    assert check["agree"].all(), check[~check["agree"]]


@pytest.mark.slow
def test_a_replay_run_logs_the_test_score_at_every_evaluation(tmp_path):
    logs = []
    assert R.run_experiment(REPLAY, tmp_path, smoke=True, progress=False, log=logs.append) == 2
    recs = [r for r in R.load_records(tmp_path).values() if r["kind"] == "run"]
    assert len(recs) == 2
    for rec in recs:
        steps = [str(e["step"]) for e in rec["evals"]]
        assert sorted(rec["test_curve"], key=int) == steps  # step 0 included
        assert rec["test_curve"][steps[-1]] == pytest.approx(rec["metrics"]["test"], abs=1e-6)
    assert len(R.replayed_runs(REPLAY, "metric", R.load_records(tmp_path), smoke=True)) == 2
