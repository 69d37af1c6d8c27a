"""Schedules come from the trainer's own scheduler objects; their shapes match their names."""
import math

import pytest

from helpers.schedules import SCHEDULES, lr_curve, warmup_steps
from helpers.batching import scaled_learning_rate, effective_batch

PEAK, N = 2e-5, 100


def test_warmup_steps_is_an_int_ratio():
    assert warmup_steps(100, 0.1) == 10 and isinstance(warmup_steps(100, 0.1), int)
    assert warmup_steps(7, 0.1) == 1
    assert warmup_steps(100, 0.0) == 0


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_schedule_peaks_at_the_peak_and_never_exceeds_it(schedule):
    r = lr_curve(schedule, PEAK, N, 0.1, floor=1e-6)
    assert len(r) == N
    assert max(r) == pytest.approx(PEAK, rel=1e-3)
    assert min(r) >= 0


def test_warmup_rises_linearly_then_decays():
    r = lr_curve("linear", PEAK, N, 0.1)
    assert r[0] == 0 and r[5] == pytest.approx(PEAK / 2) and r[10] == pytest.approx(PEAK)
    assert all(a >= b for a, b in zip(r[10:], r[11:]))
    assert r[-1] == pytest.approx(PEAK / 90)


def test_constant_is_flat_after_warmup():
    assert set(lr_curve("constant", PEAK, N, 0.0)) == {PEAK}
    assert set(lr_curve("constant", PEAK, N, 0.1)[10:]) == {PEAK}


def test_cosine_floor_ends_near_the_floor_and_cosine_near_zero():
    floor = lr_curve("cosine_floor", PEAK, N, 0.1, floor=1e-6)
    assert 1e-6 <= floor[-1] < 1.1e-6
    assert lr_curve("cosine", PEAK, N, 0.1)[-1] < 1e-7
    mid = 10 + 45
    assert floor[mid] == pytest.approx(1e-6 + (PEAK - 1e-6) * (1 + math.cos(math.pi * 45 / 90)) / 2, rel=0.02)


def test_onecycle_starts_low_and_ends_lower():
    r = lr_curve("onecycle", PEAK, N, 0.1)
    assert r[0] == pytest.approx(PEAK / 25)
    assert r.index(max(r)) in (9, 10)
    assert r[-1] < r[0] / 100


def test_wsd_has_a_plateau_then_decays_to_the_floor():
    r = lr_curve("wsd", PEAK, N, 0.1, floor=2e-6, decay_fraction=0.2)
    assert all(x == pytest.approx(PEAK) for x in r[10:80])
    assert r[-1] < PEAK / 2 and min(r[80:]) >= 2e-6 - 1e-12


def test_unknown_schedule_lists_choices():
    with pytest.raises(ValueError, match="cosine_floor"):
        lr_curve("exponential", PEAK, N)


def test_batch_scaling_rules():
    assert scaled_learning_rate(2e-5, 64, 16, "linear") == pytest.approx(8e-5)
    assert scaled_learning_rate(2e-5, 64, 16, "sqrt") == pytest.approx(4e-5)
    assert scaled_learning_rate(2e-5, 16, 16, "sqrt", grad_accum=4) == pytest.approx(4e-5)
    assert scaled_learning_rate(2e-5, 64, 16, "none") == 2e-5
    assert effective_batch(32, 8) == 256
    with pytest.raises(ValueError, match="none, linear, sqrt"):
        scaled_learning_rate(2e-5, 64, 16, "cubic")
