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
    ranks = {r["rank"]: r for r in (json.loads(line[len("RESULT "):]) for line in p.stdout.splitlines()
                                    if line.startswith("RESULT "))}
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


def test_search_workers_share_one_study(tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["search", "--workers", "2", "--trials", "4", "--scale", "smoke", "--max-seq-length", "32",
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
