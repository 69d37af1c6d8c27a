"""Verdicts on paired seeds: a t interval of the per-seed differences decides better / worse / equivalent."""
import numpy as np
import pytest
from scipy import stats

from helpers import verdicts as V
from helpers.verdicts import (compare, fmt, judge, mean_sd, results_table, seeds_needed, t_interval, verdict,
                              verdict_keeps)


def runs(*tests, seeds=None):
    seeds = range(len(tests)) if seeds is None else seeds
    return [{"test": t, "dev": t, "wall_s": 1.0, "seed": s} for t, s in zip(tests, seeds)]


def test_mean_sd_and_format():
    m, s = mean_sd(runs(0.80, 0.82, 0.84))
    assert m == pytest.approx(0.82) and s == pytest.approx(0.02)
    assert fmt(runs(0.80, 0.82, 0.84)) == "0.8200 ± 0.0200"


def test_t_interval_matches_scipy():
    d = [0.0258, 0.0240, 0.0330]  # the calibration of docs/references.md: constant minus linear, 3 seeds
    low, high = t_interval(d)
    ref = stats.t.interval(0.95, 2, loc=np.mean(d), scale=stats.sem(d))
    assert (low, high) == pytest.approx(ref)
    assert low == pytest.approx(0.01577, abs=1e-4) and high == pytest.approx(0.03943, abs=1e-4)


def test_pairing_uses_the_per_seed_differences():
    # Seed-to-seed spread is large (0.80..0.84) but B is always exactly 0.01 below A:
    # paired, the interval is a point at +0.01; unpaired it would straddle zero.
    a, b = runs(0.80, 0.84, 0.82), runs(0.79, 0.83, 0.81)
    c = compare("a", a, "b", b, margin=0.005)
    assert c.paired and c.n == 3 and c.diff == pytest.approx(0.01)
    assert c.low == pytest.approx(0.01) and c.high == pytest.approx(0.01)
    assert c.outcome() == "better" and "SUPPORTED" in verdict("a beats b", c)
    unpaired = compare("a", a, "b", runs(0.79, 0.83, 0.81, seeds=[10, 11, 12]), margin=0.005)
    assert not unpaired.paired and unpaired.outcome() == "inconclusive"


def test_pairs_match_by_seed_not_by_position():
    a = runs(0.80, 0.84, 0.82, seeds=[0, 1, 2])
    b = runs(0.81, 0.83, 0.79, seeds=[2, 1, 0])  # same numbers per seed minus 0.01, listed in another order
    c = compare("a", a, "b", b)
    assert c.diffs == pytest.approx([0.01, 0.01, 0.01])


def test_identical_arms_are_never_better():
    rng = np.random.default_rng(0)
    for _ in range(200):
        x = list(rng.normal(0.85, 0.01, size=rng.integers(2, 8)))
        c = compare("a", runs(*x), "b", runs(*x))
        assert c.outcome() == "equivalent"
        assert judge(c, "a_better") == "no difference"


def test_a_planted_five_sd_difference_is_found():
    rng = np.random.default_rng(1)
    found = 0
    for _ in range(100):
        base = rng.normal(0.85, 0.02, size=5)
        noise = rng.normal(0, 0.002, size=5)
        a, b = base + 5 * 0.002 + noise, base  # per-seed difference: 5 sd of the difference noise
        c = compare("a", runs(*a), "b", runs(*b), margin=0.001)
        found += c.outcome() == "better"
    assert found >= 95


def test_equivalence_needs_the_whole_interval_inside_the_margin():
    inside = compare("a", runs(0.851, 0.852, 0.850), "b", runs(0.850, 0.851, 0.851), margin=0.005)
    assert inside.outcome() == "equivalent"
    assert judge(inside, "equivalent") == "supported" and judge(inside, "a_better") == "no difference"
    # Same mean difference, but a spread that pushes the interval past the margin: not equivalent.
    wide = compare("a", runs(0.86, 0.84, 0.851), "b", runs(0.85, 0.85, 0.85), margin=0.005)
    assert wide.outcome() == "inconclusive" and judge(wide, "equivalent") == "inconclusive"
    # Reliably different beyond the margin: an equivalence claim is contradicted.
    far = compare("a", runs(0.87, 0.88, 0.875), "b", runs(0.85, 0.86, 0.855), margin=0.005)
    assert far.outcome() == "better" and judge(far, "equivalent") == "contradicted"
    # A small, steady difference: the interval excludes zero yet lies inside the margin. Equivalent, and it says so.
    steady = compare("a", runs(0.853, 0.854, 0.852), "b", runs(0.850, 0.851, 0.849), margin=0.005)
    assert steady.outcome() == "equivalent" and steady.low > 0
    assert "excludes zero: a real difference, but smaller than the margin" in steady.sentence()
    assert "excludes zero" not in inside.sentence()


def test_reversed_difference_contradicts():
    c = compare("linear", runs(0.80, 0.801, 0.802), "constant", runs(0.85, 0.851, 0.852))
    assert c.outcome() == "worse" and "CONTRADICTED" in verdict("decay beats a constant rate", c)
    assert "SUPPORTED" in verdict("constant beats decay", c, supported_if_a_better=False)


def test_inconclusive_says_how_many_seeds_would_decide():
    c = compare("a", runs(0.80, 0.84, 0.82), "b", runs(0.81, 0.83, 0.80), margin=0.005)
    assert c.outcome() == "inconclusive"
    text = verdict("a beats b", c)
    assert "INCONCLUSIVE" in text and "paired seeds at this spread would decide it" in text
    n = seeds_needed(c.diff, c.sd_diff, c.margin)
    half = stats.t.ppf(0.975, n - 1) * c.sd_diff / np.sqrt(n)
    assert half < abs(c.diff) or abs(c.diff) + half < c.margin
    half_before = stats.t.ppf(0.975, n - 2) * c.sd_diff / np.sqrt(n - 1)
    assert not (half_before < abs(c.diff) or abs(c.diff) + half_before < c.margin)


def test_one_seed_gives_no_verdict():
    c = compare("a", runs(0.9), "b", runs(0.8))
    assert c.inside_noise and "no noise estimate" in c.sentence()
    assert "NO VERDICT" in verdict("a beats b", c)


def test_lower_is_better_metrics():
    c = compare("a", runs(1.0, 1.01, 1.02), "b", runs(2.0, 2.01, 2.02), key="test", margin=0.01)
    assert c.outcome(higher_is_better=False) == "better"
    assert "SUPPORTED" in verdict("a has a lower loss", c, higher_is_better=False)


def test_baseline_gain_line_warns_when_training_did_not_help():
    helped = compare("a", runs(0.86, 0.87, 0.865), "b", runs(0.85, 0.86, 0.855), untuned=0.82)
    assert "baseline b gains +0.0350 over the untuned model" in helped.sentence()
    assert "says little" not in helped.sentence()
    flat = compare("a", runs(0.86, 0.87, 0.865), "b", runs(0.82, 0.821, 0.822), untuned=0.82)
    assert "did not clearly beat the untuned model" in verdict("a beats b", flat)


def test_a_baseline_that_does_not_beat_the_untuned_model_decides_nothing():
    """Arms far apart, but the baseline training left the model where it was: no verdict, and the reason."""
    flat = compare("a", runs(0.86, 0.87, 0.865), "b", runs(0.82, 0.821, 0.822), untuned=0.82)
    assert flat.outcome() == "better" and flat.baseline_too_weak
    assert judge(flat, "a_better") == "no verdict"
    assert "cannot tell settings apart" in verdict("a beats b", flat)
    assert not compare("a", runs(0.86, 0.87, 0.865), "b", runs(0.85, 0.86, 0.855), untuned=0.82).baseline_too_weak
    assert not compare("a", runs(0.86, 0.87), "b", runs(0.85, 0.86)).baseline_too_weak  # untuned score unknown


def test_keeps_quality_is_non_inferiority():
    kept = compare("frozen", runs(0.848, 0.849, 0.850), "full", runs(0.850, 0.851, 0.852))
    assert "SUPPORTED" in verdict_keeps("freezing keeps quality", kept, margin=0.01)
    lost = compare("frozen", runs(0.80, 0.801, 0.802), "full", runs(0.85, 0.851, 0.852))
    assert "CONTRADICTED" in verdict_keeps("freezing keeps quality", lost, margin=0.01)
    noisy = compare("frozen", runs(0.80, 0.86, 0.83), "full", runs(0.85, 0.851, 0.852))
    assert "INCONCLUSIVE" in verdict_keeps("freezing keeps quality", noisy, margin=0.01)


def test_unknown_expectation_is_refused():
    c = compare("a", runs(0.8, 0.81), "b", runs(0.8, 0.81))
    with pytest.raises(ValueError, match="Unknown expectation"):
        judge(c, "a_wins")


def test_results_table():
    t = results_table({"a": runs(0.8, 0.82), "b": runs(0.7, 0.72)})
    assert list(t.index) == ["a", "b"] and t.loc["a", "seeds"] == 2 and t.loc["b", "test"] == "0.7100 ± 0.0141"


def test_movement_says_whether_training_beat_the_untuned_model_by_more_than_the_margin():
    runs = [{"seed": s, "dev": v} for s, v in enumerate((0.80, 0.81, 0.82))]
    moved = V.movement("code", runs, 0.79, metric="nDCG@10")
    assert "0.7900 untuned -> 0.8100" in moved and "+0.0200" in moved and "can compare settings" in moved
    still = V.movement("STS-B", [{"seed": 0, "dev": 0.8880}, {"seed": 1, "dev": 0.8882}], 0.8892)
    assert "-0.0011" in still and "cannot tell settings apart" in still and "0.005 margin" in still
