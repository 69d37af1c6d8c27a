"""Reliability (issue 9): bad settings, divergence, interrupts, out-of-memory, malformed data, safe loading.

Training tests use the tiny ``sts_small`` task and the ``fast`` settings
(32 pairs, batch 8, 32 tokens, a few optimizer steps) and test doubles for the
failures: a loss that returns NaN, a callback that raises KeyboardInterrupt or
torch.OutOfMemoryError, a model whose ``save`` is interrupted.
"""
import json
import logging
import math
import os
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from transformers import TrainerCallback

from helpers import data as D
from helpers import models as M
from helpers import training as T
from helpers.data import DataError
from helpers.evaluation import score
from helpers.training import (ConfigError, TrainConfig, TrainingOOMError, TrainResult, save_model_atomically, train,
                              validate)



@pytest.fixture
def run_dirs(monkeypatch):
    """The temporary run folders train() makes in this test (other processes may make their own meanwhile)."""
    made = []
    real = tempfile.mkdtemp

    def mkdtemp(*args, **kwargs):
        path = real(*args, **kwargs)
        if os.path.basename(path).startswith("workshop-run-"):
            made.append(path)
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)  # train() makes its folder through helpers.distributed
    return made


# =============================================================================== 1. settings


@pytest.mark.parametrize("changes,setting,allowed", [
    ({"learning_rate": 0}, "learning_rate", "positive"),
    ({"learning_rate": -1e-5}, "learning_rate", "positive"),
    ({"learning_rate": float("nan")}, "learning_rate", "positive"),
    ({"warmup_fraction": 1.0}, "warmup_fraction", "[0, 1)"),
    ({"warmup_fraction": -0.1}, "warmup_fraction", "[0, 1)"),
    ({"schedule": "cosine_floor", "floor": 1e-3}, "floor", "below the peak"),
    ({"schedule": "wsd", "learning_rate": 1e-5, "floor": 1e-5}, "floor", "below the peak"),
    ({"schedule": "cosine_floor"}, "floor", "below the peak"),
    ({"batch_size": 0}, "batch_size", "at least 1"),
    ({"batch_size": -4}, "batch_size", "at least 1"),
    ({"epochs": 0}, "epochs", "positive"),
    ({"epochs": -1}, "epochs", "positive"),
    ({"grad_accum": 0}, "grad_accum", "at least 1"),
    ({"freeze_layers": -1}, "freeze_layers", "at least 0"),
    ({"schedule": "cosin"}, "schedule", "one of"),
    ({"loss": "cosentt"}, "loss", "one of"),
    ({"early_stopping_patience": 0}, "early_stopping_patience", "at least 1"),
    ({"train_size": 0}, "train_size", "at least 1"),
])
def test_every_bad_setting_names_setting_value_range_and_a_way_out(changes, setting, allowed):
    cfg = TrainConfig(**changes).resolved()
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    e = err.value
    assert e.setting == setting
    msg = str(e)
    assert msg.startswith(f"{setting}={getattr(cfg, setting)!r}")  # the setting and its value
    assert allowed in msg  # the allowed range
    assert e.suggestion and e.suggestion in msg  # a way out


def test_misspelt_names_get_a_did_you_mean():
    with pytest.raises(ConfigError, match="Did you mean 'cosine'"):
        validate(TrainConfig(schedule="cosin").resolved())
    with pytest.raises(ConfigError, match="Did you mean 'cosent'"):
        validate(TrainConfig(loss="cosentt").resolved())


def test_high_rate_warns_but_trains_not():
    notes = validate(TrainConfig(learning_rate=0.05).resolved())
    assert len(notes) == 1 and "learning_rate=0.05" in notes[0] and "1e-5 to 1e-4" in notes[0]
    assert validate(TrainConfig(learning_rate=1e-2).resolved()) == []


def test_model_and_data_dependent_settings():
    cfg = TrainConfig().resolved()
    with pytest.raises(ConfigError, match=r"freeze_layers=7 .*0\.\.6 \(the model has 6 layers\).*freeze_layers=5"):
        validate(cfg.replace(freeze_layers=7), layers=6)
    with pytest.raises(ConfigError, match=r"loss='mnrl' .*fits the data's columns.*loss='cosent'"):
        validate(cfg.replace(loss="mnrl"), columns=["sentence1", "sentence2", "score"])
    with pytest.raises(ConfigError, match=r"loss='cosine' .*loss='mnrl'"):
        validate(cfg.replace(loss="cosine"), columns=["anchor", "positive"])
    with pytest.raises(ConfigError, match=r"train_size=96 .*at most the 50 .*train_size=50"):
        validate(cfg, n_train=50)


def test_every_parameter_frozen_fails_before_training(sts_small, fast, run_dirs):
    model = M.load_model(device="cpu", max_seq_length=32)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ConfigError, match="Every weight is frozen") as err:
        train(TrainConfig(max_steps=1), data=sts_small, model=model, **fast)
    assert err.value.setting == "freeze_layers" and err.value.suggestion
    assert run_dirs == []  # failed before a run folder was even made


def test_train_size_larger_than_the_task_fails_before_training(monkeypatch, fast):
    def no_model(*a, **k):
        raise AssertionError("the model was loaded although the settings cannot work")

    monkeypatch.setattr(T, "load_model", no_model)
    with pytest.raises(ConfigError, match=r"train_size=6000 .*at most the 5749 training examples") as err:
        train(TrainConfig(task="stsb", train_size=6000, dev_size=8, test_size=8, max_steps=1), **fast)
    assert err.value.setting == "train_size" and "train_size=5749" in err.value.suggestion
    with pytest.raises(ConfigError, match="train_size=6000"):
        T.prepare_task(TrainConfig(task="stsb", train_size=6000, dev_size=8, test_size=8))


def test_train_size_larger_than_a_users_file_is_a_config_error(tmp_path, fast):
    p = tmp_path / "pairs.csv"
    p.write_text("sentence1,sentence2,score\n" + "".join(f"a{i},b{i},0.5\n" for i in range(20)), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"train_size=100 .*at most the 16 training examples"):
        T.prepare_task(TrainConfig(task=str(p), train_size=100))


def test_scale_default_sizes_are_not_strict():
    """Only a size the learner chose is checked; the scale's default quietly takes what there is."""
    task = T.prepare_task(TrainConfig(task="stsb", dev_size=8, test_size=8))
    assert len(task.train) == 96  # the smoke scale's size


# =============================================================================== 2. divergence


class NaNLossAfter:
    """Test double: the loss returns NaN from training call ``at`` on (evaluation calls stay finite)."""

    def __init__(self, monkeypatch, at: int):
        self.at, self.calls = at, 0
        real = T.make_loss

        def make(*args, **kwargs):
            loss = real(*args, **kwargs)
            forward = loss.forward

            def nan_forward(*a, **k):
                out = forward(*a, **k)
                if torch.is_grad_enabled() and loss.training:
                    self.calls += 1
                    if self.calls >= self.at:
                        return out * float("nan")
                return out

            loss.forward = nan_forward
            return loss

        monkeypatch.setattr(T, "make_loss", make)


@pytest.mark.slow
@pytest.mark.parametrize("early_stopping", [False, True])
def test_injected_nan_stops_the_run_and_keeps_a_usable_model(monkeypatch, caplog, sts_small, fast, early_stopping):
    NaNLossAfter(monkeypatch, at=3)
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = train(TrainConfig(learning_rate=3e-5, warmup_fraction=0.1, epochs=3,
                              early_stopping_patience=5 if early_stopping else None), data=sts_small,
                  **{**fast, "evals_per_epoch": 2})
    # stops within a few steps of the NaN, with a reason naming the rate and the warm-up
    assert r.steps == 3
    assert r.stop_reason.startswith("diverged") and "NaN" in r.stop_reason
    assert "3.0e-05" in r.stop_reason and "warmup_fraction=0.1" in r.stop_reason
    # the result so far
    assert [p["step"] for p in r.train_loss] == [1, 2, 3]
    assert math.isfinite(r.train_loss[1]["loss"]) and math.isnan(r.train_loss[-1]["loss"])
    assert r.evals[0]["step"] == 0 and r.evals[-1]["step"] == 2
    # the model is kept: the NaN never reached the weights
    assert r.model is not None
    assert all(torch.isfinite(p).all() for p in r.model.parameters())
    assert math.isfinite(r.test_metric) and 0 < r.test_metric <= 1
    if early_stopping:  # the best evaluation's weights came back
        best = max(r.evals, key=lambda e: e["metric"])
        assert r.best_step == best["step"]
        assert score(r.model, sts_small.dev_evaluator) == pytest.approx(best["metric"], abs=1e-6)
    # one reason, not a flood of messages
    assert len(caplog.records) <= 3, [rec.getMessage() for rec in caplog.records]
    assert len(caught) <= 3, [str(w.message) for w in caught]
    assert r.stop_reason.count("diverged") == 1


# =============================================================================== 3. interruption


class InterruptAt(TrainerCallback):
    """Test double: Ctrl-C at the end of optimizer step ``step``."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_interrupt_returns_the_history_so_far(sts_small, fast, run_dirs):
    r = train(TrainConfig(epochs=3), data=sts_small, callbacks=[InterruptAt(3)], **{**fast, "evals_per_epoch": 2})
    assert r.stop_reason == "interrupted" and r.steps == 3
    assert [p["step"] for p in r.train_loss] == [1, 2]  # step 3's log never came
    assert [e["step"] for e in r.evals] == [0, 2] and len(r.lr) == 3
    assert r.model is not None and math.isfinite(r.test_metric)
    assert run_dirs and not any(os.path.exists(d) for d in run_dirs)


@pytest.mark.slow
def test_interrupt_with_early_stopping_restores_the_best_evaluation(sts_small, fast):
    model = M.load_model(device="cpu", max_seq_length=32)
    r = train(TrainConfig(epochs=3, learning_rate=1e-4, schedule="constant", warmup_fraction=0.0,
                          early_stopping_patience=10), data=sts_small, model=model, callbacks=[InterruptAt(5)],
              **{**fast, "evals_per_epoch": 2})
    assert r.stop_reason == "interrupted" and r.steps == 5
    assert [e["step"] for e in r.evals] == [0, 2, 4]
    best = max(r.evals, key=lambda e: e["metric"])
    assert r.best_step == best["step"] and r.dev_metric == pytest.approx(best["metric"])
    assert score(model, sts_small.dev_evaluator) == pytest.approx(best["metric"], abs=1e-6)


class InterruptedSave:
    """Test double: a model whose ``save`` writes part of the files, then is interrupted."""

    def __init__(self, exc=KeyboardInterrupt):
        self.exc = exc

    def save(self, path):
        Path(path, "modules.json").write_text("[]")
        Path(path, "model.safetensors").write_bytes(b"half")
        raise self.exc


class GoodSave:
    def save(self, path):
        Path(path, "modules.json").write_text('["new"]')


def test_interrupted_save_leaves_no_half_written_folder(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        save_model_atomically(InterruptedSave(), tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_save_keeps_the_previous_model(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "modules.json").write_text('["old"]')
    for exc in (KeyboardInterrupt, OSError("disk full")):
        with pytest.raises(type(exc) if isinstance(exc, OSError) else exc):
            save_model_atomically(InterruptedSave(exc), out)
        assert [p.name for p in tmp_path.iterdir()] == ["model"]
        assert (out / "modules.json").read_text() == '["old"]' and len(list(out.iterdir())) == 1


def test_interrupt_while_swapping_folders_puts_the_previous_model_back(tmp_path, monkeypatch):
    out = tmp_path / "model"
    out.mkdir()
    (out / "modules.json").write_text('["old"]')
    real_rename = Path.rename
    calls = []

    def rename(self, target):
        calls.append(self.name)
        if len(calls) == 2:  # the new folder moving into place
            raise KeyboardInterrupt
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        save_model_atomically(GoodSave(), out)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert (out / "modules.json").read_text() == '["old"]'
    save_model_atomically(GoodSave(), out)  # and a normal save replaces it
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert (out / "modules.json").read_text() == '["new"]'


# =============================================================================== 4. memory


class OOMAt(TrainerCallback):
    """Test double: the accelerator runs out of memory when optimizer step ``step`` begins."""

    def __init__(self, step: int, exc=None):
        self.step = step
        self.exc = exc or torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.step:
            raise self.exc


@pytest.mark.slow
def test_out_of_memory_is_reported_with_ways_out_and_the_process_stays_usable(sts_small, fast, run_dirs):
    model = M.load_model(device="cpu", max_seq_length=32)
    with pytest.raises(TrainingOOMError) as err:
        train(TrainConfig(max_steps=4), data=sts_small, model=model,
              callbacks=[OOMAt(2)], **fast)
    msg = str(err.value)
    assert isinstance(err.value, RuntimeError)
    assert "ran out of" in msg and "batch_size=8" in msg
    assert "batch_size=4" in msg  # a smaller batch
    assert "grad_accum=2" in msg  # accumulation for per-example losses
    assert "loss='cached_mnrl'" in msg and "mini_batch_size" in msg  # for in-batch losses
    assert "freeze_layers=" in msg
    assert "CUDA out of memory" in msg  # the original error
    assert err.value.__cause__ is None and err.value.__context__ is None  # holds no trainer alive
    assert len(run_dirs) == 1 and not os.path.exists(run_dirs[0])  # the temporary folder is gone
    assert all(p.grad is None for p in model.parameters())
    # the same process trains again, even the same model
    r = train(TrainConfig(max_steps=2), data=sts_small, model=model, **fast)
    assert r.stop_reason == "finished" and r.steps == 2 and math.isfinite(r.test_metric)


def test_oom_advice_fits_an_in_batch_loss():
    cfg = TrainConfig(task="snli", batch_size=64).resolved()
    err = T._oom_error(cfg, "mnrl", "cuda", "OutOfMemoryError: CUDA out of memory")
    assert "keep batch_size=64 with loss='cached_mnrl'" in str(err)
    assert "grad_accum does not help in-batch losses" in str(err)
    err = T._oom_error(cfg, "cached_mnrl", "cuda", "x")
    assert "mini_batch_size=16" in str(err)


@pytest.mark.slow
def test_runtime_error_saying_out_of_memory_is_caught_but_other_errors_pass(sts_small, fast):
    with pytest.raises(TrainingOOMError):
        train(TrainConfig(max_steps=2), data=sts_small,
              callbacks=[OOMAt(1, RuntimeError("CUDA error: out of memory"))], **fast)
    with pytest.raises(RuntimeError, match="something else") as err:
        train(TrainConfig(max_steps=2), data=sts_small, callbacks=[OOMAt(1, RuntimeError("something else"))], **fast)
    assert not isinstance(err.value, TrainingOOMError)


# =============================================================================== 5. data

# Fragments that make files *almost* right, which finds more bugs than random bytes alone.
CSV_BITS = ["sentence1", "sentence2", "score", "anchor", "positive", "negative", ",", "\t", '"', "\n", "\r\n", "\r",
            "0.5", "5", "-1", "nan", "inf", "1e999", "9" * 400, "", " ", "\x00", "é", "\ufeff", "a b", "'"]
JSON_BITS = ['{"anchor": ', '{"sentence1": "a", "sentence2": "b", "score": ', '"q"', '"p"', ', "positive": ',
             ', "negative": ', '"score"', '}', '{', '[', ']', "null", "true", "0.5", "NaN", "-Infinity", "1e400",
             "9" * 400, "9" * 5000, '"\\ud800"', '"\\u0000"', '""', "[" * 3000, "\n", ":", ",", '{"a": 1}',
             '{"anchor": [1], "positive": {"x": 2}}', '{"anchor": "q", "positive": "p"}']
STSB_BITS = ["main-captions", "MSRvid", "2012", "0001", "\t", "\n", "\r\n", "5.000", "3.5", "-1", "nan", "6",
             "1e999", "9" * 400, "A man.", "", " ", "\x00", "é"]
SNLI_BITS = ["entailment", "neutral", "contradiction", "-", "A man .", "does n't", "``", "''", "\n", "\r\n", " ", ""]


def files_from(bits):
    text = st.lists(st.sampled_from(bits) | st.text(max_size=6), max_size=25).map("".join)
    return (text.map(lambda t: t.encode("utf-8", "surrogatepass"))
            | st.binary(max_size=120)
            | st.tuples(text, st.binary(max_size=6), text).map(
                lambda p: p[0].encode("utf-8", "surrogatepass") + p[1] + p[2].encode("utf-8", "surrogatepass")))


def lines_in(content: bytes) -> int:
    return content.count(b"\n") + content.count(b"\r") + 1


def loads_or_data_error(load, content: bytes):
    """Run a loader: it returns, or raises DataError that names a line inside the file. Nothing else escapes."""
    try:
        return load()
    except DataError as err:
        if err.line is not None:
            assert f"line {err.line}" in str(err)
            assert 1 <= err.line <= lines_in(content), (err.line, content)
        assert err.path is None or err.path in str(err)
        return None


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(suffix=st.sampled_from([".csv", ".tsv", ".jsonl"]), content=files_from(CSV_BITS + JSON_BITS),
       header=st.sampled_from([b"", b"sentence1,sentence2,score\n", b"anchor\tpositive\n", b"sentence1\tsentence2\tscore\n"]))
def test_pairs_loader_on_malformed_files(suffix, content, header):
    content = header + content
    with tempfile.TemporaryDirectory() as d:
        p = Path(d, "data" + suffix)
        p.write_bytes(content)
        ds = loads_or_data_error(lambda: D.load_pairs_file(p), content)
    if ds is not None:
        assert len(ds) >= 1
        for col in ds.column_names:
            if col == "score":
                assert all(0 <= s <= 1 for s in ds[col])
            else:
                assert all(isinstance(s, str) and s.strip() == s and s for s in ds[col])


@FUZZ
@given(content=files_from(STSB_BITS))
def test_stsb_parser_on_malformed_files(content):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d, "sts-train.csv")
        p.write_bytes(content)
        cols = loads_or_data_error(lambda: D.parse_stsb_file(p), content)
    if cols is not None:
        assert len(cols["score"]) >= 1 and all(0 <= s <= 1 for s in cols["score"])
        assert all(s for s in cols["sentence1"] + cols["sentence2"])


@FUZZ
@given(s1=files_from(SNLI_BITS), s2=files_from(SNLI_BITS), labels=files_from(SNLI_BITS))
def test_snli_reader_on_malformed_files(s1, s2, labels):
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d, "snli")
        folder.mkdir()
        for name, content in (("s1", s1), ("s2", s2), ("labels", labels)):
            Path(folder, f"{name}.dev").write_bytes(content)
        rows = loads_or_data_error(lambda: D.snli_rows_from_files("dev", data_dir=d),
                                   max((s1, s2, labels), key=lines_in))
    if rows is not None:
        assert all(label in D.SNLI_LABELS.values() for _, _, label in rows)


@pytest.mark.parametrize("name,content,line,match", [
    ("huge_int.jsonl", '{"anchor": "q", "positive": "p"}\n{"anchor": ' + "9" * 5000 + ', "positive": "p"}\n', 2, "JSON"),
    ("deep.jsonl", "[" * 100000 + "\n", 1, "JSON"),
    ("surrogate.jsonl", '{"anchor": "q\\ud800", "positive": "p"}\n', 1, "anchor"),
    ("list.jsonl", '{"anchor": ["q"], "positive": "p"}\n', 1, "anchor"),
    ("overflow.jsonl", '{"sentence1": "a", "sentence2": "b", "score": ' + "9" * 400 + "}\n", 1, "score"),
    ("overflow.csv", "sentence1,sentence2,score\na,b," + "9" * 400 + "\n", 2, "score"),
])
def test_loader_bugs_found_by_the_fuzzer(tmp_path, name, content, line, match):
    p = tmp_path / name
    p.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=match) as err:
        D.load_pairs_file(p)
    assert err.value.line == line and f"line {line}" in str(err.value)


def test_stsb_score_too_large_for_a_float(tmp_path):
    p = tmp_path / "sts.csv"
    p.write_text("g\tf\t2012\t1\t" + "9" * 400 + "\tA\tB\n", encoding="utf-8")
    with pytest.raises(DataError, match="score") as err:
        D.parse_stsb_file(p)
    assert err.value.line == 1


# =============================================================================== 6. safety


def test_load_model_refuses_remote_code_and_pickled_weights(monkeypatch, tmp_path):
    import sentence_transformers

    seen = []
    real = sentence_transformers.SentenceTransformer

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", spy)
    model = M.load_model(device="cpu")
    assert seen[-1]["trust_remote_code"] is False
    assert seen[-1]["model_kwargs"] == {"use_safetensors": True}
    # a folder with only pickled weights (pytorch_model.bin) is refused with a way out
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    model.save(str(folder))
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="no model.safetensors.*model.save"):
        M.load_model(folder, device="cpu")


@pytest.mark.slow
def test_train_result_json_round_trip(tmp_path, monkeypatch, sts_small, fast):
    r = train(TrainConfig(max_steps=1), data=sts_small, **fast)
    r.train_loss.append({"step": 2, "epoch": 1.0, "loss": float("nan")})  # non-finite values survive too
    path = r.save_json(tmp_path / "runs" / "run.json")
    assert [p.name for p in path.parent.iterdir()] == ["run.json"]  # no temporary file left
    assert json.loads(path.read_text().replace("NaN", "null"))["format"] == "workshop-train-result"
    back = TrainResult.load_json(path)
    assert back.model is None
    assert back.summary() == r.summary() and back.dev_metric == r.dev_metric
    assert back.evals == r.evals and back.lr == r.lr and back.layer_lrs == r.layer_lrs
    assert math.isnan(back.train_loss[-1]["loss"]) and back.train_loss[:-1] == r.train_loss[:-1]
    assert back.config == json.loads(json.dumps(r.config))
    # rewriting is atomic: an interrupt before the rename keeps the old file and leaves no temporary file
    with pytest.raises(TypeError):
        TrainResult(config={"x": object()}, metric="Spearman").save_json(path)

    def interrupted_replace(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        TrainResult(config={}, metric="nDCG@10").save_json(path)
    monkeypatch.undo()
    assert TrainResult.load_json(path).summary() == r.summary()
    assert [p.name for p in path.parent.iterdir()] == ["run.json"]


def test_load_json_rejects_other_files(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"a": 1}')
    with pytest.raises(ValueError, match="not a saved training result"):
        TrainResult.load_json(p)
    p.write_text("not json")
    with pytest.raises(ValueError, match="not a saved training result"):
        TrainResult.load_json(p)


def test_an_easy_inbatch_loss_rising_from_near_zero_is_not_called_divergence():
    """MNRL on small batches can start at 1e-5 and reach 0.9 on an ordinary batch (notebook 03's code search)."""
    from types import SimpleNamespace

    from helpers.training import Recorder, TrainResult

    result = TrainResult(config={"warmup_fraction": 0.1}, metric="nDCG@10", learning_rate=5e-5)
    rec = Recorder(result, "ndcg")
    control = SimpleNamespace(should_training_stop=False)
    for step, loss in enumerate([1.6e-5, 2e-5, 1e-4, 0.3, 0.94], start=1):
        rec.on_log(None, SimpleNamespace(global_step=step, epoch=step / 10), control, logs={"loss": loss})
    assert not control.should_training_stop and result.stop_reason == "finished"
    rec.on_log(None, SimpleNamespace(global_step=6, epoch=0.6), control, logs={"loss": 4.0})
    assert control.should_training_stop and result.stop_reason.startswith("diverged: the training loss exploded")
