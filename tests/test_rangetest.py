"""The rate range test sweeps exponentially on the trainer, suggests a rate, and restores the weights."""
import numpy as np
import pytest
import torch

from helpers import models as M
from helpers.rangetest import lr_range_test, suggest, valley
from helpers.training import TrainConfig


def test_suggestions_on_a_synthetic_curve():
    """A curve whose three answers follow from the rules by hand (the first 10 and last 5 points are trimmed).

    Flat at 4 up to point 29; falls as a tanh centred on point 45 down to its minimum at point 60; then rises.
    ``steep``: the tanh falls fastest at its centre, point 45. ``min/10``: a tenth of the rate at point 60.
    ``valley``: the longest descending run is one flat point and points 30..60 (32 points), ending at trimmed
    index 50; its start is 50 - 32 = 18 and two-thirds down is 18 + int(32 / 3) + int(32 / 3 / 2) = 33,
    which is point 43.
    """
    rates = np.logspace(-7, -1, 100)
    i = np.arange(100)
    loss = np.where(i < 30, 4.0, np.where(i <= 60, 2.5 - 1.5 * np.tanh((i - 45) / 5), 0.0))
    loss[61:] = loss[60] + 0.2 * (i[61:] - 60)
    s = suggest(list(rates), list(loss))
    assert s == {"valley": rates[43], "steep": rates[45], "min/10": rates[60] / 10}
    assert valley([1, 2, 3, 4, 5, 6, 7], [7, 6, 5, 4, 3, 2, 1]) == 3  # run of 7 from -1: -1 + 2 + 1 = index 2


@pytest.mark.slow
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
    labels = sts_small.dev["score"][:64]  # the probe batch: the first validation pairs
    assert r.probe_ordered_pairs == sum(a > b for a in labels for b in labels)
    assert r.collapse_loss == pytest.approx(np.log1p(r.probe_ordered_pairs))
    assert len(r.probe_losses) == r.steps and len(r.probe_spearman) == r.steps


def test_range_test_rejects_bad_bounds():
    with pytest.raises(ValueError, match="start < end"):
        lr_range_test(start=1e-2, end=1e-5)
    with pytest.raises(ValueError, match="at least 20"):
        lr_range_test(steps=5)
