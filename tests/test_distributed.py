"""Beyond one machine (README "Scaling out"): data-parallel training on torchrun, parallel search workers.

Two real runs: ``torch.distributed.run`` with 2 CPU processes (gloo) training a tiny STS-B run, and
``python -m helpers search --workers 2`` on one SQLite study. The rest checks bad input and the
pieces (command line of a worker, trial budget) without training.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from helpers import cli, distributed as Dist, tuning as S, workers as W
from helpers.batching import batch_plan
from helpers.training import ConfigError, TrainConfig, TrainResult, train

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WORKSHOP_SCALE": "smoke",
       "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

# Logs which process saves the model, then runs one training like ``python -m helpers train``.
SCRIPT = """
import os, sys
import helpers.training as T
from helpers.cli import main

real = T.save_model_atomically
def logged(model, out):
    print(f"SAVED rank={os.environ['RANK']}", flush=True)
    return real(model, out)
T.save_model_atomically = logged
sys.exit(main(["train", *sys.argv[1:]]))
"""


def results_in(stdout: str) -> list[dict]:
    """Every ``RESULT {...}`` record in ``stdout``: two processes share the pipe, so one line may hold both."""
    decoder, out, at = json.JSONDecoder(), [], stdout.find("RESULT ")
    while at >= 0:
        record, end = decoder.raw_decode(stdout, at + len("RESULT "))
        out.append(record)
        at = stdout.find("RESULT ", end)
    return out


def test_results_in_reads_records_that_share_a_line():
    assert results_in('x\nRESULT {"rank": 1}RESULT {"rank": 0}\nRESULT {"rank": 2, "a": [1]}\n') == [
        {"rank": 1}, {"rank": 0}, {"rank": 2, "a": [1]}]


@pytest.mark.slow
def test_two_processes_train_as_one_and_rank_0_writes_once(tmp_path):
    script = tmp_path / "run_one.py"
    script.write_text(SCRIPT)
    # 40 rows, batch 8, 2 processes: the trainer drops the short batch, 5 full batches -> 2 rounds of 2 per epoch
    cfg = {"train_size": 40, "dev_size": 32, "test_size": 32, "epochs": 1, "max_seq_length": 32, "batch_size": 8,
           "evals_per_epoch": 1, "lr_scaling": "linear", "base_batch_size": 8, "output_dir": str(tmp_path / "model")}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(script), "--config", json.dumps(cfg), "--result", str(tmp_path / "result.json")],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    ranks = {r["rank"]: r for r in results_in(p.stdout)}
    assert set(ranks) == {0, 1}
    for r in ranks.values():
        assert r["world_size"] == 2 and r["effective_batch"] == 2 * 8 and r["steps"] == 2
        assert r["steps"] == batch_plan(8, 1, 2, 40)["steps_per_epoch"]  # what the batch calculator shows
        assert r["learning_rate"] == pytest.approx(2e-5 * 16 / 8)  # the linear rule scaled by 8 x 1 x 2 processes
    for key in ("dev", "test", "train_loss", "stop_reason"):  # one model, one set of numbers
        assert ranks[0][key] == ranks[1][key], key
    assert 0 < ranks[0]["test"] <= 1
    assert [line for line in p.stdout.splitlines() if line.startswith("SAVED")] == ["SAVED rank=0"]
    assert (tmp_path / "model" / "modules.json").exists()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["model", "result.json", "run_one.py"]  # no half-written copies
    saved = TrainResult.load_json(tmp_path / "result.json")
    assert saved.world_size == 2 and saved.effective_batch == 16 and saved.test_metric == ranks[0]["test"]


@pytest.mark.slow
def test_search_workers_share_one_study(tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["search", "--space", "broad", "--workers", "2", "--trials", "4", "--scale", "smoke", "--max-seq-length", "32",
                     "--no-progress", "--output", str(out)])
    io = capsys.readouterr()
    logs = "".join(p.read_text() for p in sorted((out / "workers").glob("*.log")))
    assert code == 0, io.err + logs[-4000:]
    study = S.create_study("recipe", out / "study.db")
    done = S.finished(study)
    assert len(done) == 4  # exactly the requested trials, however the two workers interleaved
    numbers = [t.number for t in study.trials]
    assert len(set(numbers)) == len(numbers)
    assert len({tuple(sorted(t.params.items())) for t in done}) == 4  # no configuration proposed twice
    assert {t.user_attrs["worker"] for t in done} == {0, 1}  # both workers took part
    summary = json.loads((out / "summary.json").read_text())
    w = summary["search"]["workers"]
    assert summary["status"] == "finished" and summary["search"]["finished"] == 4
    assert w["exit_codes"] == [0, 0] and sum(w["trials_by_worker"].values()) == 4 and w["new_trials"] == 4
    assert (out / "best_trial_model" / "modules.json").exists()
    assert not list((out / "workers").glob("*/best_trial_model"))
    assert "search: 4 of 4 trials finished" in io.out


@pytest.mark.parametrize("extra, message", [
    (["--workers", "0"], "must be at least 1"),
    (["--workers", "two"], "is not a whole number"),
    (["--workers", "2", "--storage", "sqlite:///:memory:"], "every worker process can open"),
    (["--workers", "2", "--storage", "sqlite://"], "every worker process can open"),
])
def test_bad_worker_requests_exit_2_before_anything_trains(extra, message, tmp_path, capsys, no_training):
    try:
        code = cli.main(["search", "--scale", "smoke", "--output", str(tmp_path / "out"), *extra])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_workers_are_refused_under_torchrun(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="torchrun"):
        W.check_workers(2, None)


def test_gradual_unfreezing_is_refused_with_several_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="gradual_unfreezing"):
        train(TrainConfig(gradual_unfreezing=True), progress=False)
    with pytest.raises(ConfigError, match="gather_across_devices"):
        train(TrainConfig(gather_across_devices="yes"), progress=False)


def test_data_parallel_arithmetic():
    assert Dist.data_parallel_steps(100, 16, 1, 2) == 3  # 6 full batches, 3 rounds of 2
    assert Dist.data_parallel_steps(100, 16, 2, 2) == 2
    with pytest.raises(ConfigError, match="batch_size"):
        Dist.data_parallel_steps(32, 32, 1, 2)
    assert Dist.world_size() == 1 and Dist.is_main_process() and Dist.broadcast("x") == "x"
    assert Dist.local_device("cuda") == "cuda" and W.is_memory_storage("sqlite:///:memory:")
    assert not W.is_memory_storage("sqlite:////tmp/x.db")


def test_a_worker_gets_the_same_command_with_its_own_number(tmp_path):
    parser = cli.build_parser()
    args = parser.parse_args(["search", "--train", "p.csv", "--score-range", "0", "5", "--output", "o", "--workers",
                              "3", "--worker", "1", "--subset", "0.5", "--pruner", "median", "--loss", "cosent"])
    search = next(a for a in parser._actions if a.dest == "command").choices["search"]
    argv = W.worker_argv(search, args, worker=4, storage="sqlite:////x/study.db", output=tmp_path / "w4",
                            scale="smoke", trials=6)
    again = parser.parse_args(["search", *argv])
    assert again.workers is None and again.worker == 4 and again.storage == "sqlite:////x/study.db"
    assert again.output == str(tmp_path / "w4") and again.trials == 6 and again.scale == "smoke"
    assert again.no_progress and again.train == "p.csv" and again.score_range == [0.0, 5.0]
    assert (again.subset, again.pruner, again.loss) == (0.5, "median", "cosent")


def test_trial_budget_counts_running_trials_and_refuses_surplus():
    study = optuna.create_study()
    budget = W.TrialBudget(2)
    first, second = study.ask(), study.ask()  # two workers' running trials
    assert budget.full(study)
    third = study.ask()
    with pytest.raises(W.SurplusTrial):
        budget.guard(lambda t: 1.0)(third)
    assert budget.guard(lambda t: 1.0)(second) == 1.0  # within the budget: it trains
    study.tell(first, state=optuna.trial.TrialState.FAIL)  # a failed trial frees its place
    assert budget.guard(lambda t: 2.0)(third) == 2.0


def test_a_failed_worker_makes_the_command_fail_with_its_log(tmp_path, capsys, monkeypatch):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'worker output before the crash'\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))  # the workers are started as `sys.executable -m helpers search`
    out = tmp_path / "out"
    code = cli.main(["search", "--workers", "2", "--trials", "2", "--scale", "smoke", "--max-seq-length", "32",
                     "--no-progress", "--output", str(out)])
    err = capsys.readouterr().err
    assert code == cli.EXIT_WORKER_FAILED == 1
    assert "worker 0 exited with code 3" in err and "worker output before the crash" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["search"]["workers"]["exit_codes"] == [3, 3]


# --------------------------------------------------------------------------- what scale-out promises, on 2 processes

# Each rank appends JSON lines to $RECORDS/rank-N.jsonl (two ranks printing to one pipe can interleave a line).
RECORD = """
import json, os
def record(**fields):
    with open(os.path.join(os.environ["RECORDS"], f"rank-{os.environ['RANK']}.jsonl"), "a") as fh:
        fh.write(json.dumps(fields) + "\\n")
"""


def torchrun(tmp_path, script_text, *args, timeout=900):
    """Run ``script_text`` on 2 CPU processes (gloo) under torchrun; ``{rank: [record, ...]}`` after a clean exit."""
    script, records = tmp_path / "script.py", tmp_path / "records"
    script.write_text(RECORD + script_text)
    records.mkdir()
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(script), *map(str, args)], cwd=ROOT, env={**ENV, "RECORDS": str(records)},
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    return {rank: [json.loads(line) for line in (records / f"rank-{rank}.jsonl").read_text().splitlines()]
            for rank in (0, 1) if (records / f"rank-{rank}.jsonl").exists()}


# Records each rank's embeddings, local loss and similarity width at the first in-batch loss of each run.
MNRL_SCRIPT = """
import sys, torch
import helpers as hp
from sentence_transformers.losses import MultipleNegativesRankingLoss as MNRL

out, seen = sys.argv[1], set()
real = MNRL.compute_loss_from_embeddings
def spy(self, embeddings, labels):
    widths, sim = [], self.similarity_fct
    self.similarity_fct = lambda a, b: widths.append(tuple(sim(a, b).shape)) or sim(a, b)
    try:
        loss = real(self, embeddings, labels)
    finally:
        self.similarity_fct = sim
    tag = "gather" if self.gather_across_devices else "local"
    if tag not in seen:
        seen.add(tag)
        torch.save({"anchors": embeddings[0].detach(), "positives": embeddings[1].detach(), "loss": loss.item(),
                    "scores": widths[0]}, f"{out}/{tag}-{os.environ['RANK']}.pt")
    return loss
MNRL.compute_loss_from_embeddings = spy
cfg = hp.TrainConfig(task="codesearch", train_size=32, dev_size=16, test_size=16, batch_size=8, max_steps=1,
                     max_seq_length=32, evals_per_epoch=0, final_test=False, loss="mnrl")
task = hp.prepare_task(cfg)
for gather in (True, False):
    hp.train(cfg.replace(gather_across_devices=gather), data=task, progress=False)
"""


@pytest.mark.slow
def test_mnrl_gathers_every_processs_candidates(tmp_path):
    """README: with gather_across_devices each anchor ranks its positive against batch x processes - 1 negatives."""
    import torch
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    from helpers.models import load_model

    torchrun(tmp_path, MNRL_SCRIPT, tmp_path)
    runs = {f"{tag}-{rank}": torch.load(tmp_path / f"{tag}-{rank}.pt") for tag in ("gather", "local") for rank in (0, 1)}
    assert runs["gather-0"]["scores"] == runs["gather-1"]["scores"] == (8, 16)  # 8 anchors x 16 candidates: 15 negatives
    assert runs["local-0"]["scores"] == runs["local-1"]["scores"] == (8, 8)  # gathering off: 7 negatives
    assert not torch.equal(runs["gather-0"]["anchors"], runs["gather-1"]["anchors"])  # each process its own batch
    # the two processes' losses average to the one-process loss on their doubled batch of 16
    one = MultipleNegativesRankingLoss(load_model(device="cpu"))
    doubled = one.compute_loss_from_embeddings(
        [torch.cat([runs[f"gather-{r}"]["anchors"] for r in (0, 1)]),
         torch.cat([runs[f"gather-{r}"]["positives"] for r in (0, 1)])], None).item()
    assert (runs["gather-0"]["loss"] + runs["gather-1"]["loss"]) / 2 == pytest.approx(doubled, rel=1e-5)
    assert one.compute_loss_from_embeddings([runs["local-0"]["anchors"], runs["local-0"]["positives"]], None).item() == \
        pytest.approx(runs["local-0"]["loss"], rel=1e-5)


# Early stopping on 2 processes; each rank re-scores the model it got back and digests its weights.
STOP_SCRIPT = """
import hashlib
import helpers as hp
from helpers.evaluation import score

cfg = hp.TrainConfig(train_size=32, dev_size=32, test_size=32, batch_size=8, max_seq_length=32, epochs=3,
                     evals_per_epoch=2, learning_rate=1e-4, schedule="constant", warmup_fraction=0.0,
                     early_stopping_patience=1, final_test=False)
task = hp.prepare_task(cfg)
r = hp.train(cfg, data=task, progress=False)
digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in r.model.parameters())).hexdigest()
record(stop=r.stop_reason, steps=r.steps, best_step=r.best_step, dev=r.dev_metric, evals=r.evals, digest=digest,
       rescored=score(r.model, task.dev_evaluator))
"""


@pytest.mark.slow
def test_early_stopping_stops_both_processes_together_on_the_same_checkpoint(tmp_path):
    ranks = torchrun(tmp_path, STOP_SCRIPT)
    assert [len(ranks[0]), len(ranks[1])] == [1, 1]
    a, b = ranks[0][0], ranks[1][0]
    assert a["stop"] == b["stop"] == "early stopping" and a["steps"] == b["steps"] < 6  # 2 steps an epoch, 3 epochs
    assert a["evals"] == b["evals"] and a["best_step"] == b["best_step"]  # one history, one decision
    assert a["digest"] == b["digest"]  # the same checkpoint restored on both
    best = max(a["evals"], key=lambda e: e["metric"])
    assert a["best_step"] == best["step"] and a["dev"] == best["metric"]
    assert a["rescored"] == b["rescored"] == pytest.approx(best["metric"], abs=1e-6)
    assert abs(a["rescored"] - a["evals"][-1]["metric"]) > 1e-4  # the weights of the last step were replaced


# `python -m helpers recipe` under torchrun, logging what every rank's SyncStop decides at each evaluation.
RECIPE_SCRIPT = """
import sys
from helpers import cli, workers as W

real = W.SyncStop.on_evaluate
def logged(self, args, state, control, **kwargs):
    real(self, args, state, control, **kwargs)
    record(step=state.global_step, lr=args.learning_rate, batch=args.per_device_train_batch_size,
           stop=bool(control.should_training_stop))
W.SyncStop.on_evaluate = logged
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_recipe_under_torchrun_runs_each_trial_on_both_processes(tmp_path):
    """lockstep_search: rank 0 proposes each trial and both processes train it; SyncStop stops them together."""
    import csv

    from helpers.data import load_stsb

    data = tmp_path / "pairs.csv"
    with open(data, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(("sentence1", "sentence2", "score"))
        w.writerows((r["sentence1"], r["sentence2"], r["score"]) for r in load_stsb("train", 80, seed=1))
    out = tmp_path / "out"
    # --subset 1: the search's largest batch (32 per process) needs 64 pairs on 2 processes
    sync = torchrun(tmp_path, RECIPE_SCRIPT, "recipe", "--space", "broad", "--train", data, "--output", out, "--trials", 2,
                    "--subset", 1, "--epochs", 1, "--scale", "smoke", "--max-seq-length", 32, "--no-progress")
    by_rank = {k: [(e["step"], e["lr"], e["batch"], e["stop"]) for e in sync[k]] for k in (0, 1)}
    assert by_rank[0] and by_rank[0] == by_rank[1]  # the same trials, the same evaluations, the same stops
    starts = [i for i, e in enumerate(by_rank[0]) if e[0] == 0]
    assert len(starts) == 2  # two trials (each evaluated at step 0), both trained by both processes
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["search"]["finished"] == 2
    assert summary["data"]["rows"] == {"train": 64, "dev": 8, "search subset": 64}
    study = S.create_study("recipe", out / "study.db")
    assert len(S.finished(study)) == 2 and len(study.trials) == 2
    for t, first in zip(study.trials, starts):  # rank 1 trained with the parameters rank 0's study proposed
        assert by_rank[1][first][2] == t.params["batch_size"]
        assert by_rank[1][first][1] == pytest.approx(t.params["learning_rate"], rel=1e-9)
    assert summary["reload"]["same_test_score"] and (out / "model" / "modules.json").exists()
