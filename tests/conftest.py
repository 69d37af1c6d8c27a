"""Shared test set-up: offline, smoke scale, the shared data folder, and small prepared tasks."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WORKSHOP_SCALE", "smoke")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if not os.environ.get("WORKSHOP_DATA_DIR"):
    shared = ROOT.parent / "shared" / "data"
    if shared.exists():
        os.environ["WORKSHOP_DATA_DIR"] = str(shared)


@pytest.fixture(scope="session")
def sts_small():
    """A tiny STS-B task (32 train, 32 dev, 32 test pairs) for fast training tests."""
    from helpers.tasks import load_task

    return load_task("stsb", train_size=32, dev_size=32, test_size=32, seed=0)


@pytest.fixture(scope="session")
def fast():
    """Settings for training tests that only need a few real optimizer steps."""
    return dict(batch_size=8, evals_per_epoch=1, max_seq_length=32, progress=False)


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if anything starts training (or starts search workers): bad input must stop first."""
    from helpers import recipe as R, tuning as S, workers as W

    def refuse(*args, **kwargs):
        raise AssertionError("training started before the input was checked")

    monkeypatch.setattr(S, "train", refuse)
    monkeypatch.setattr(R, "train", refuse)
    monkeypatch.setattr(W, "run_workers", refuse)


# --------------------------------------------------------------------------- the "slow" marker keeps its meaning
# `make test-fast` (-m "not slow") skips every test that trains a model. A test that starts the trainer in this
# process (itself or through a fixture it is the first to use) without the marker fails, naming the marker.
# Training in a child process (torchrun, search workers) is marked by hand.

_trainings = [0]


def pytest_configure(config):
    from transformers import Trainer

    real = Trainer.train

    def counted(self, *args, **kwargs):
        _trainings[0] += 1
        return real(self, *args, **kwargs)

    Trainer.train = counted


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item.trainings_before = _trainings[0]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    trained = _trainings[0] - getattr(item, "trainings_before", _trainings[0])
    if call.when == "teardown" and trained and item.get_closest_marker("slow") is None and report.passed:
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} trained a model {trained} time(s) but is not marked "
                           "@pytest.mark.slow; mark it so that `make test-fast` (-m 'not slow') skips it.")
