"""Turning repeated runs into numbers and verdicts (every notebook's "what this run measured" cells).

A syllabus claim is compared between two arms (for example "linear decay"
against "constant rate"), each run with several seeds. The verdict is
computed, never typed: the difference of the means is set against its
standard error across seeds, and a difference smaller than twice that error
is reported as *inside the seed noise*.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NOISE_FACTOR = 2.0  # a difference within 2 standard errors is "inside the seed noise"
NO_VERDICT = "NO VERDICT (one seed per arm; run at workshop scale for several seeds)"
KEEPS_MARGIN = 0.01  # "keeps quality": at most this much worse (Spearman / nDCG@10), beyond the seed noise


def values(results, key: str = "test") -> np.ndarray:
    """One number per run: ``test`` (final test metric), ``dev`` (last/best dev metric), ``wall_s`` ..."""
    out = []
    for r in results:
        out.append(r.summary()[key] if hasattr(r, "summary") else r[key])
    return np.asarray(out, dtype=float)


def mean_sd(results, key: str = "test") -> tuple[float, float]:
    """Mean and sample standard deviation across runs (sd 0 for a single run)."""
    v = values(results, key)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def fmt(results, key: str = "test", digits: int = 4) -> str:
    """``0.8412 ± 0.0031`` for a list of runs."""
    m, s = mean_sd(results, key)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


@dataclass
class Comparison:
    """The difference between two arms and whether it stands out from the seed noise."""

    a: str
    b: str
    mean_a: float
    mean_b: float
    diff: float  # mean_a - mean_b
    stderr: float  # standard error of the difference
    n_a: int
    n_b: int

    @property
    def inside_noise(self) -> bool:
        if self.n_a < 2 or self.n_b < 2:
            return True  # one seed cannot separate signal from noise
        return abs(self.diff) <= NOISE_FACTOR * self.stderr

    @property
    def headline(self) -> str:
        """The two means and their difference, without any judgement (start of every verdict's sentence)."""
        word = "higher" if self.diff > 0 else "lower"
        return f"{self.a} {self.mean_a:.4f} vs {self.b} {self.mean_b:.4f}: {self.a} is {abs(self.diff):.4f} {word}"

    def sentence(self, metric: str = "test score", higher_is_better: bool = True) -> str:
        better = (self.diff > 0) == higher_is_better
        base = self.headline
        if self.n_a < 2 or self.n_b < 2:
            return base + " (one seed per arm: no noise estimate, so no verdict)."
        if self.inside_noise:
            return base + f", inside the seed noise (2 x standard error = {NOISE_FACTOR * self.stderr:.4f})."
        return base + f", beyond the seed noise (2 x standard error = {NOISE_FACTOR * self.stderr:.4f}); " + (
            f"{self.a} is better." if better else f"{self.b} is better.")


def compare(a_name: str, a_results, b_name: str, b_results, key: str = "test") -> Comparison:
    """Compare two arms on ``key`` (Welch-style standard error of the difference of means)."""
    va, vb = values(a_results, key), values(b_results, key)
    var_a = va.var(ddof=1) / len(va) if len(va) > 1 else 0.0
    var_b = vb.var(ddof=1) / len(vb) if len(vb) > 1 else 0.0
    return Comparison(a_name, b_name, float(va.mean()), float(vb.mean()), float(va.mean() - vb.mean()),
                      math.sqrt(var_a + var_b), len(va), len(vb))


def verdict(claim: str, comparison: Comparison, supported_if_a_better: bool = True, metric: str = "test score",
            higher_is_better: bool = True) -> str:
    """One computed paragraph: the claim, what was measured, and whether the measurement supports it."""
    c = comparison
    a_better = (c.diff > 0) == higher_is_better
    if c.n_a < 2 or c.n_b < 2:
        status = NO_VERDICT
    elif c.inside_noise:
        status = "NOT SHOWN at this scale (inside the seed noise)"
    elif a_better == supported_if_a_better:
        status = "SUPPORTED by this run"
    else:
        status = "CONTRADICTED by this run"
    return f"Claim: {claim}\nMeasured ({metric}): {c.sentence(metric, higher_is_better)}\nVerdict: {status}."


def verdict_keeps(claim: str, comparison: Comparison, margin: float = KEEPS_MARGIN, metric: str = "test score",
                  higher_is_better: bool = True) -> str:
    """A verdict for claims that A *keeps* B's quality (notebook 02: freezing, layer-wise rates).

    "Inside the noise" is not evidence that nothing was lost, so these claims get
    a non-inferiority test: SUPPORTED when even the pessimistic end of the
    difference (mean difference minus 2 standard errors) loses less than
    ``margin``; CONTRADICTED when even the optimistic end loses more than
    ``margin``; otherwise the seeds are too noisy to tell.
    """
    c = comparison
    gain = c.diff if higher_is_better else -c.diff  # > 0: A is better
    band = NOISE_FACTOR * c.stderr
    measured = c.headline
    if c.n_a < 2 or c.n_b < 2:
        status = NO_VERDICT
        measured += " (one seed per arm: no noise estimate)"
    else:
        low, high = gain - band, gain + band
        measured += (f"; with the seed noise, {c.a} is between {-high:.4f} worse and {-low:.4f} worse"
                     if high < 0 else f"; with the seed noise, {c.a} changes the score by {low:+.4f} to {high:+.4f}")
        if low >= -margin:
            status = f"SUPPORTED by this run (no loss larger than {margin:g}, beyond the seed noise)"
        elif high < -margin:
            status = f"CONTRADICTED by this run (a loss larger than {margin:g}, beyond the seed noise)"
        else:
            status = f"NOT SHOWN at this scale (the seed noise allows a loss larger than {margin:g})"
    return f"Claim: {claim}\nMeasured ({metric}): {measured}.\nVerdict: {status}."


def results_table(results_by_arm: dict, keys=("dev", "test", "wall_s")):
    """A pandas table: one row per arm, ``mean ± sd`` per key, and the number of seeds."""
    import pandas as pd

    rows = []
    for arm, results in results_by_arm.items():
        row = {"arm": arm, "seeds": len(results)}
        for k in keys:
            row[k] = fmt(results, k, 1 if k == "wall_s" else 4)
        rows.append(row)
    return pd.DataFrame(rows).set_index("arm")
