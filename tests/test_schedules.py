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
    assert max(r) == pytest.approx(PEAK, rel=1e-12)  # every schedule reaches the peak exactly after warm-up
    assert min(r) >= 0


W = 10  # warm-up steps: ceil(100 x 0.1)


def cosine_factor(t, start, length):
    """Half a cosine from 1 down to 0 over ``length`` steps, at step ``t`` (the library's cosine decay)."""
    return 0.5 * (1 + math.cos(math.pi * (t - start) / length))


def test_warmup_rises_linearly_then_decays():
    r = lr_curve("linear", PEAK, N, 0.1)
    assert r[0] == 0 and r[5] == pytest.approx(PEAK * 5 / W, rel=1e-12) and r[W] == pytest.approx(PEAK, rel=1e-12)
    assert all(a >= b for a, b in zip(r[10:], r[11:]))
    for t in (10, 55, 99):  # linear decay: PEAK x (N - t) / (N - W)
        assert r[t] == pytest.approx(PEAK * (N - t) / (N - W), rel=1e-12), t
    assert r[-1] == pytest.approx(PEAK / 90, rel=1e-12)


def test_constant_is_flat_after_warmup():
    assert set(lr_curve("constant", PEAK, N, 0.0)) == {PEAK}
    assert set(lr_curve("constant", PEAK, N, 0.1)[10:]) == {PEAK}


def test_cosine_floor_ends_at_its_closed_form_and_cosine_near_zero():
    floor = lr_curve("cosine_floor", PEAK, N, 0.1, floor=1e-6)
    cosine = lr_curve("cosine", PEAK, N, 0.1)
    for t in (10, 55, 99):  # floor + (PEAK - floor) x the cosine factor over the N - W decay steps
        assert floor[t] == pytest.approx(1e-6 + (PEAK - 1e-6) * cosine_factor(t, W, N - W), rel=1e-9), t
        assert cosine[t] == pytest.approx(PEAK * cosine_factor(t, W, N - W), rel=1e-9), t
    assert floor[55] == pytest.approx(1.05e-5, rel=1e-12)  # the midpoint: halfway between peak and floor
    assert cosine[55] == pytest.approx(PEAK / 2, rel=1e-12)
    assert floor[-1] == pytest.approx(1.0057871433e-6, rel=1e-9) and cosine[-1] == pytest.approx(6.0917298e-9, rel=1e-7)


def test_onecycle_starts_at_peak_over_25_and_ends_at_that_over_10000():
    r = lr_curve("onecycle", PEAK, N, 0.1)
    low, end = PEAK / 25, PEAK / 25 / 1e4  # PyTorch's div_factor and final_div_factor
    assert r[0] == pytest.approx(low, rel=1e-12)
    assert r.index(max(r)) == 9 and max(r) == pytest.approx(PEAK, rel=1e-12)  # the rise ends at step 0.1 x 100 - 1
    for t in (5, 9):  # the rise: a cosine from low to PEAK over 9 steps
        assert r[t] == pytest.approx(PEAK + (low - PEAK) * cosine_factor(t, 0, 9), rel=1e-9), t
    for t in (55, 99):  # the fall: a cosine from PEAK to end over the remaining 90 steps
        assert r[t] == pytest.approx(end + (PEAK - end) * cosine_factor(t, 9, 90), rel=1e-9), t
    assert r[-1] == pytest.approx(end, rel=1e-9)


def test_wsd_has_a_plateau_then_decays_to_the_floor():
    floor = 2e-6
    r = lr_curve("wsd", PEAK, N, 0.1, floor=floor, decay_fraction=0.2)
    assert r[0] == floor and r[5] == pytest.approx(floor + (PEAK - floor) * 5 / W, rel=1e-12)  # warm-up from the floor
    assert all(x == pytest.approx(PEAK, rel=1e-12) for x in r[10:80])
    for t in (80, 90, 99):  # the last 20 steps: a cosine from PEAK down towards the floor
        assert r[t] == pytest.approx(floor + (PEAK - floor) * cosine_factor(t, 80, 20), rel=1e-9), t
    assert r[90] == pytest.approx((PEAK + floor) / 2, rel=1e-12)
    assert r[-1] == pytest.approx(2.1108049346e-6, rel=1e-9)


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


def test_plot_arms_shows_each_seeds_test_score_against_the_untuned_model():
    import matplotlib

    matplotlib.use("Agg")
    import helpers as hp

    def run(test, seed):
        return hp.TrainResult(config={"seed": seed}, metric="nDCG@10", evals=[{"step": 0, "metric": 0.7}],
                              lr=[1e-5, 2e-5], train_loss=[{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.9}],
                              test_metric=test)

    results = {"constant": [run(0.81, 0), run(0.82, 1)], "linear, 10% warm-up": [run(0.80, 0), run(0.79, 1)]}
    axes = hp.plots.plot_arms(results, key="test", untuned=0.77)
    right = axes[2]
    from matplotlib.collections import PathCollection

    points = [tuple(xy) for coll in right.collections if isinstance(coll, PathCollection) for xy in coll.get_offsets()]
    assert sorted(points) == [(0, 0.81), (0, 0.82), (1, 0.79), (1, 0.80)]  # one dot per seed, one column per arm
    assert [t.get_text() for t in right.get_xticklabels()] == ["constant", "linear,\n10% warm-up"]
    assert any(list(line.get_ydata()) == [0.77, 0.77] for line in right.get_lines())  # the untuned line
    import matplotlib.pyplot as plt

    plt.close("all")
