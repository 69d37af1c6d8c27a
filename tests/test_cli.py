"""``python -m helpers``: the recipe end to end on small user files, every bad input, Ctrl-C and resuming."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from optuna.trial import TrialState
from transformers import TrainerCallback

from helpers import cli, recipe as R, tuning as S
from helpers.data import load_stsb

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--scale", "smoke", "--trials", "2", "--max-seq-length", "32", "--no-progress", "--space", "broad"]


@pytest.fixture(scope="module")
def rows():
    ds = load_stsb("train", 40, seed=1)
    return [(r["sentence1"], r["sentence2"], round(r["score"] * 5, 2)) for r in ds]


def write_csv(path, rows, header=("sentence1", "sentence2", "score")):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def run(argv, capsys):
    """The exit code and stderr of one command-line run (argparse errors exit through SystemExit)."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr()


class Interrupt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        raise KeyboardInterrupt


def test_help_explains_every_option():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    assert set(subparsers) == {"recipe", "search", "train"}
    for name, sub in subparsers.items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings} has no help"
        if name == "train":  # one torchrun run: --config and --result only
            continue
        text = sub.format_help()
        for option in ("--train", "--dev", "--test", "--output", "--scale", "--trials", "--storage", "--pruner"):
            assert option in text


@pytest.mark.slow
def test_recipe_on_a_user_csv(tmp_path, rows, capsys):
    data = write_csv(tmp_path / "pairs.csv", rows)
    out = tmp_path / "out"
    code, io = run(["recipe", "--train", data, "--score-range", 0, 5, "--output", out, *FAST], capsys)
    assert code == 0, io.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["search"]["finished"] == 2
    assert summary["data"]["rows"] == {"train": 32, "dev": 4, "search subset": 32}
    assert set(summary["search"]["best_params"]) == set(S.SPACE)
    final = summary["final"]
    assert final["config"]["learning_rate"] == summary["search"]["best_params"]["learning_rate"]
    assert final["config"]["loss"] == "cosent" and 0 <= final["test"] <= 1
    assert summary["reload"]["same_test_score"] and summary["reload"]["embedding_dim"] == 384
    assert (out / "model" / "modules.json").exists() and not (out / "best_trial_model").exists()
    assert {"prepare_s", "search_s", "final_s", "default_s", "total_s"} <= set(summary["timings"])
    assert "untuned:" in io.out and "tuned:" in io.out and "summary:" in io.out
    # the common default trained on the same data, and a plain statement of whether the tuned run beat it
    assert summary["default"]["config"]["learning_rate"] == 2e-5 and 0 <= summary["default"]["test"] <= 1
    assessment = summary["assessment"]
    assert assessment["beats_default"] in (True, False) and assessment["notes"] and "default: dev" in io.out
    assert summary["final"]["reused"] is False and summary["default"]["reused"] is False
    # the same command again: the study has its trials, and the finished final and default runs are kept, not retrained
    code, io = run(["recipe", "--train", data, "--score-range", 0, 5, "--output", out, *FAST], capsys)
    assert code == 0, io.err
    again = json.loads((out / "summary.json").read_text())
    assert again["search"]["new_trials"] == 0 and again["final"]["reused"] and again["default"]["reused"]
    assert again["final"]["test"] == final["test"] and again["default"]["dev"] == summary["default"]["dev"]
    assert again["reload"]["same_test_score"] and "kept from the earlier run" in io.out


@pytest.mark.slow
def test_search_on_user_jsonl_files(tmp_path, rows, capsys):
    recs = [{"anchor": a, "positive": p} for a, p, _ in rows]
    train, dev, test = (write_jsonl(tmp_path / f"{n}.jsonl", part)
                        for n, part in (("train", recs[:24]), ("dev", recs[24:32]), ("test", recs[32:])))
    out = tmp_path / "out"
    code, io = run(["search", "--train", train, "--dev", dev, "--test", test, "--output", out, *FAST], capsys)
    assert code == 0, io.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["metric"] == "nDCG@10" and summary["data"]["rows"]["dev"] == 8
    assert summary["status"] == "finished" and "final" not in summary
    assert (out / "best_trial_model" / "modules.json").exists()


BAD = {
    "missing file": (lambda d, r: ["--train", d / "nope.csv"], "file not found"),
    "unsupported extension": (lambda d, r: ["--train", write_csv(d / "pairs.txt", r)], "unsupported extension"),
    "score not a number": (lambda d, r: ["--train", write_csv(d / "p.csv", [r[0], (r[1][0], r[1][1], "high")] + r[2:]),
                                         "--score-range", 0, 5], "line 3: score 'high' is not a number"),
    "score outside the range": (lambda d, r: ["--train", write_csv(d / "p.csv", r)], "outside [0, 1]"),
    "wrong columns": (lambda d, r: ["--train", write_csv(d / "p.csv", r, ("text1", "text2", "label"))],
                      "match neither"),
    "malformed jsonl": (lambda d, r: ["--train", _bad_jsonl(d)], "line 2: not valid JSON"),
    "dev columns differ": (lambda d, r: ["--train", write_csv(d / "p.csv", r), "--score-range", 0, 5, "--dev",
                                         write_jsonl(d / "dev.jsonl", [{"anchor": "a", "positive": "b"}])],
                           "differ from the training"),
    "too few rows": (lambda d, r: ["--train", write_csv(d / "p.csv", r[:6]), "--score-range", 0, 5], "too few"),
    "constant dev scores": (lambda d, r: ["--train", write_csv(d / "p.csv", r), "--score-range", 0, 5, "--dev",
                                          write_csv(d / "dev.csv", [(a, b, 3) for a, b, _ in r[:5]])],
                            "scores that vary"),
    "dev without a training file": (lambda d, r: ["--dev", write_csv(d / "dev.csv", r)], "need a training file"),
    "train size above the data": (lambda d, r: ["--train", write_csv(d / "p.csv", r), "--score-range", 0, 5,
                                                "--train-size", 500], "larger than the data"),
    "loss that does not fit": (lambda d, r: ["--train", write_csv(d / "p.csv", r), "--score-range", 0, 5,
                                             "--loss", "mnrl"], "fits the data"),
    "reversed score range": (lambda d, r: ["--train", write_csv(d / "p.csv", r), "--score-range", 5, 0], "LOW < HIGH"),
    "zero trials": (lambda d, r: ["--trials", 0], "must be at least 1"),
    "subset above 1": (lambda d, r: ["--subset", 1.5], "fraction in (0, 1]"),
    "negative epochs": (lambda d, r: ["--epochs", -1], "positive number"),
    "zero search epochs": (lambda d, r: ["--search-epochs", 0], "positive number"),
    "unknown scale": (lambda d, r: ["--scale", "huge"], "invalid choice: 'huge'"),
    "unknown pruner": (lambda d, r: ["--pruner", "asha"], "invalid choice: 'asha'"),
    "unknown device": (lambda d, r: ["--device", "tpu"], "Unknown device 'tpu'"),
    "model folder without a model": (lambda d, r: ["--model", _empty_dir(d)], "neither modules.json nor config.json"),
    "storage that cannot open": (lambda d, r: ["--storage", "nosuchdb://somewhere/x"], "Cannot open the study storage"),
    "storage that is not a database": (lambda d, r: ["--storage", write_csv(d / "notdb.db", r)],
                                       "Cannot open the study storage"),
    "output is a file": (lambda d, r: ["--output", write_csv(d / "taken.csv", r)], "is a file"),
    "output holds other files": (lambda d, r: ["--output", _foreign_dir(d)], "holds other files"),
}


def _bad_jsonl(d):
    p = d / "p.jsonl"
    p.write_text('{"anchor": "a", "positive": "b"}\n{"anchor": "c", "positive": \n')
    return p


def _empty_dir(d):
    (d / "empty_model").mkdir()
    return d / "empty_model"


def _foreign_dir(d):
    (d / "mine").mkdir()
    (d / "mine" / "thesis.txt").write_text("important")
    return d / "mine"


@pytest.mark.parametrize("case", list(BAD))
def test_every_bad_input_is_reported_before_training(case, tmp_path, rows, capsys, no_training):
    extra, message = BAD[case]
    args = extra(tmp_path, rows)
    argv = ["recipe", *FAST, *args]
    if "--output" not in args:
        argv += ["--output", tmp_path / "out"]
    code, io = run(argv, capsys)
    assert code == 2, (code, io.err)
    assert message in io.err, io.err
    assert "Traceback" not in io.err


def test_a_different_search_in_the_same_folder_is_refused(tmp_path, rows, capsys, no_training):
    data = write_csv(tmp_path / "p.csv", rows)
    out = tmp_path / "out"
    R.Recipe(train=data, score_range=(0, 5), output=out, scale="smoke", max_seq_length=32, space="broad").prepare()
    code, io = run(["recipe", "--train", data, "--score-range", 0, 5, "--output", out, *FAST, "--subset", 0.5],
                   capsys)
    assert code == 2 and "other settings" in io.err


def test_trials_can_train_fewer_epochs_than_the_final_run(tmp_path, rows, capsys, no_training):
    """--search-epochs: the search on all the data for a quarter of the final run's epochs (notebook 07's bar)."""
    data = write_csv(tmp_path / "p.csv", rows)
    out = tmp_path / "out"
    r = R.Recipe(train=data, score_range=(0, 5), output=out, scale="smoke", max_seq_length=32, subset=1.0, space="broad",
                 epochs=4, search_epochs=1).prepare()
    assert r.trial_base().epochs == 1 and r.final_base().epochs == 4 and r.default_config().epochs == 4
    assert r.summary["search"]["epochs"] == 1 and r.summary["data"]["rows"]["search subset"] == 32
    # the study records the trials' epochs: another number in the same folder is refused, not mixed in
    code, io = run(["recipe", "--train", data, "--score-range", 0, 5, "--output", out, *FAST, "--subset", 1,
                    "--epochs", 4, "--search-epochs", 2], capsys)
    assert code == 2 and "other settings" in io.err


def test_the_narrow_space_tries_each_usual_rate_on_all_the_data(tmp_path, rows, capsys, no_training):
    """--space narrow (notebook 07): a grid of the 3 usual rates, every trial on all the rows, unpruned; a larger
    --trials is capped at the grid, and an explicit --subset or --pruner still wins."""
    data = write_csv(tmp_path / "p.csv", rows)
    r = R.Recipe(train=data, score_range=(0, 5), output=tmp_path / "a", scale="smoke", max_seq_length=32).prepare()
    assert (r.trials, r.subset_fraction, r.pruner) == (3, 1.0, "none") and r.space == S.NARROW_SPACE
    assert r.summary["search"]["space"] == "narrow" and r.summary["data"]["rows"]["search subset"] == 32
    assert type(r.study.sampler).__name__ == "GridSampler"
    r = R.Recipe(train=data, score_range=(0, 5), output=tmp_path / "b", scale="smoke", max_seq_length=32,
                 space="narrow", trials=10, subset=0.5, pruner="median").prepare()
    assert (r.trials, r.subset_fraction, r.pruner) == (3, 0.5, "median")
    broad = R.Recipe(train=data, score_range=(0, 5), output=tmp_path / "c", scale="smoke", max_seq_length=32,
                     space="broad").prepare()
    assert (broad.subset_fraction, broad.pruner) == (S.SUBSET_FRACTION, "halving")
    # every setting the grid leaves alone is the common default's, whatever the scale's own (batch 32 at full)
    full = R.Recipe(train=data, score_range=(0, 5), output=tmp_path / "f", scale="full", max_seq_length=32,
                    space="narrow").prepare()
    assert {k: getattr(full.trial_base().resolved(), k) for k in R.COMMON_DEFAULT if k != "learning_rate"} == {
        k: v for k, v in R.COMMON_DEFAULT.items() if k != "learning_rate"}
    assert R.Recipe(train=data, score_range=(0, 5), output=tmp_path / "g", scale="full", max_seq_length=32,
                    space="broad").prepare().trial_base().resolved().batch_size == 32
    assert type(broad.study.sampler).__name__ == "TPESampler"
    code, io = run(["recipe", "--train", data, "--score-range", 0, 5, "--output", tmp_path / "d", *FAST,
                    "--space", "wide"], capsys)
    assert code == 2 and "invalid choice: 'wide'" in io.err
    with pytest.raises(S.ConfigError, match="one of broad, narrow"):
        R.Recipe(train=data, score_range=(0, 5), output=tmp_path / "e", scale="smoke", space="wide").prepare()


@pytest.mark.slow
def test_a_narrow_search_trains_each_rate_once_and_a_rerun_adds_nothing(tmp_path, rows, capsys):
    data = write_csv(tmp_path / "p.csv", rows)
    out = tmp_path / "out"
    argv = ["search", "--train", data, "--score-range", 0, 5, "--output", out, "--scale", "smoke",
            "--max-seq-length", "32", "--no-progress", "--space", "narrow"]
    code, io = run(argv, capsys)
    assert code == 0, io.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["search"]["finished"] == 3 and summary["search"]["pruned"] == 0
    assert set(summary["search"]["best_params"]) == {"learning_rate"}
    study = S.create_study("recipe", out / "study.db")
    assert sorted(t.params["learning_rate"] for t in study.trials) == [2e-5, 3e-5, 5e-5]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    code, io = run([*argv, "--trials", 5], capsys)
    assert code == 0, io.err
    assert json.loads((out / "summary.json").read_text())["search"]["new_trials"] == 0 and len(study.trials) == 3


def test_bad_input_exits_non_zero_from_a_real_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORKSHOP_SCALE": "smoke"}
    p = subprocess.run([sys.executable, "-m", "helpers", "recipe", "--train", str(tmp_path / "nope.csv"),
                        "--output", str(tmp_path / "out")], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 2 and "file not found" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow
def test_ctrl_c_keeps_the_study_and_the_best_model_and_a_rerun_resumes(tmp_path, rows, capsys, monkeypatch):
    data = write_csv(tmp_path / "pairs.csv", rows)
    out = tmp_path / "out"
    argv = ["recipe", "--train", data, "--score-range", 0, 5, "--output", out, *FAST]
    real, calls = S.train, []

    def second_trial_interrupted(cfg, **kwargs):
        calls.append(cfg)
        if len(calls) == 2:
            kwargs["callbacks"] = [*kwargs.get("callbacks", ()), Interrupt()]
        return real(cfg, **kwargs)

    monkeypatch.setattr(S, "train", second_trial_interrupted)
    code, io = run(argv, capsys)
    assert code == 130, io.err
    assert "run the same command again" in io.err.lower()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["stage"] == "search"
    assert summary["model"].endswith("best_trial_model") and (out / "best_trial_model" / "modules.json").exists()
    study = S.create_study("recipe", out / "study.db")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]

    monkeypatch.setattr(S, "train", real)
    code, io = run(argv, capsys)
    assert code == 0, io.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["search"]["new_trials"] == 1
    assert summary["search"]["finished"] == 2 and (out / "model" / "modules.json").exists()
