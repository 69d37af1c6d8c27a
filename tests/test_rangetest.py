"""The rate range test sweeps exponentially on the trainer, suggests a rate, and restores the weights."""
import numpy as np
import pytest
import torch

from helpers import models as M
from helpers.rangetest import lr_range_test, suggest, valley
from helpers.training import TrainConfig


def test_suggestions_on_a_synthetic_curve():
    rates = np.logspace(-7, -1, 100)
    x = np.log10(rates)
    loss = 1 + 0.5 * np.tanh(-(x + 4)) + np.where(x > -2.5, (x + 2.5) ** 2 * 3, 0)
    s = suggest(list(rates), list(loss))
    assert 1e-6 < s["steep"] < 1e-3 and 1e-6 < s["valley"] < 1e-2 and s["min/10"] < 1e-2
    assert valley([1, 2, 3, 4, 5, 6, 7], [7, 6, 5, 4, 3, 2, 1]) in (2, 3, 4, 5)


def test_range_test_restores_weights_and_records_an_exponential_sweep(sts_small):
    model = M.load_model(device="cpu", max_seq_length=32)
    before = M.snapshot(model)
    r = lr_range_test(TrainConfig(batch_size=8, max_seq_length=32), start=1e-6, end=1e-2, steps=24, model=model,
                      data=sts_small, progress=False)
    after = M.snapshot(model)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert r.steps >= 6 and r.rates[0] == pytest.approx(1e-6)
    ratios = np.diff(np.log(r.rates))
    assert np.allclose(ratios, ratios[0])
    assert set(r.suggestions) == {"valley", "steep", "min/10"} and r.suggestion == r.suggestions["valley"]
    assert all(np.isfinite(r.smoothed))


def test_range_test_rejects_bad_bounds():
    with pytest.raises(ValueError, match="start < end"):
        lr_range_test(start=1e-2, end=1e-5)
    with pytest.raises(ValueError, match="at least 20"):
        lr_range_test(steps=5)
