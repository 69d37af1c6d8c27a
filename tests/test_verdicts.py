"""Verdicts are computed from seeds: a difference inside 2 standard errors is reported as noise."""
import pytest

from helpers.verdicts import compare, fmt, mean_sd, results_table, verdict, verdict_keeps


def runs(*tests):
    return [{"test": t, "dev": t, "wall_s": 1.0} for t in tests]


def test_mean_sd_and_format():
    m, s = mean_sd(runs(0.80, 0.82, 0.84))
    assert m == pytest.approx(0.82) and s == pytest.approx(0.02)
    assert fmt(runs(0.80, 0.82, 0.84)) == "0.8200 ± 0.0200"


def test_clear_difference_is_supported():
    c = compare("linear", runs(0.85, 0.851, 0.852), "constant", runs(0.80, 0.801, 0.802))
    assert not c.inside_noise and c.diff == pytest.approx(0.05)
    text = verdict("decay beats a constant rate", c)
    assert "SUPPORTED" in text and "linear is better" in text


def test_reversed_difference_contradicts():
    c = compare("linear", runs(0.80, 0.801, 0.802), "constant", runs(0.85, 0.851, 0.852))
    assert "CONTRADICTED" in verdict("decay beats a constant rate", c)


def test_overlapping_seeds_are_noise():
    c = compare("a", runs(0.80, 0.84, 0.82), "b", runs(0.81, 0.83, 0.825))
    assert c.inside_noise
    assert "NOT SHOWN" in verdict("a beats b", c) and "inside the seed noise" in c.sentence()


def test_one_seed_gives_no_verdict():
    c = compare("a", runs(0.9), "b", runs(0.8))
    assert c.inside_noise and "no noise estimate" in c.sentence()
    assert "NO VERDICT" in verdict("a beats b", c)


def test_lower_is_better_metrics():
    c = compare("a", runs(1.0, 1.01, 1.02), "b", runs(2.0, 2.01, 2.02), key="test")
    assert "SUPPORTED" in verdict("a has a lower loss", c, higher_is_better=False)


def test_results_table():
    t = results_table({"a": runs(0.8, 0.82), "b": runs(0.7, 0.72)})
    assert list(t.index) == ["a", "b"] and t.loc["a", "seeds"] == 2 and t.loc["b", "test"] == "0.7100 ± 0.0141"


def test_min_max_bars_never_negative_for_equal_seeds():
    """Three seeds with the same score: the mean can differ from each by one ulp (a real crash in notebook 04)."""
    from helpers.plots import min_max_bars

    for v in ([0.1, 0.1, 0.1], [0.7, 0.7, 0.7], [1 / 3] * 7, [0.8203, 0.8555]):
        lo, hi = min_max_bars(v)
        assert lo[0] >= 0 and hi[0] >= 0
    assert min_max_bars([1.0, 2.0, 3.0]) == [[1.0], [1.0]]


def test_keeps_quality_needs_the_whole_noise_band_above_the_margin():
    same = compare("freeze 4", runs(0.785, 0.786, 0.787), "full", runs(0.785, 0.786, 0.787))
    assert "SUPPORTED" in verdict_keeps("freezing keeps quality", same)
    assert "NOT SHOWN" in verdict("freezing keeps quality", same)  # the plain verdict cannot say it
    slightly_worse = compare("a", runs(0.780, 0.781, 0.782), "b", runs(0.785, 0.786, 0.787))
    assert "SUPPORTED" in verdict_keeps("a keeps b's quality", slightly_worse)  # 0.005 lost, within 0.01
    much_worse = compare("a", runs(0.75, 0.751, 0.752), "b", runs(0.785, 0.786, 0.787))
    assert "CONTRADICTED" in verdict_keeps("a keeps b's quality", much_worse)
    noisy = compare("a", runs(0.70, 0.80, 0.75), "b", runs(0.785, 0.786, 0.787))
    assert "NOT SHOWN" in verdict_keeps("a keeps b's quality", noisy)
    assert "NO VERDICT" in verdict_keeps("a keeps b's quality", compare("a", runs(0.7), "b", runs(0.8)))
    lower_better = compare("a", runs(1.0, 1.001, 1.002), "b", runs(1.0, 1.001, 1.002))
    assert "SUPPORTED" in verdict_keeps("a keeps b's loss", lower_better, higher_is_better=False)
