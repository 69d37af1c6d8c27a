"""Turning repeated runs into numbers and verdicts (every notebook's "what this run measured" cells).

A syllabus claim is compared between two arms (for example "linear decay"
against "constant rate"), each run with the same seeds. Runs with the same
seed share their data order and initial state, so the verdict works on the
**paired** per-seed differences (docs/references.md, "Comparing settings
fairly"):

* a 95% t interval of the mean difference (n - 1 degrees of freedom, scipy);
* **A better / A worse** when the interval excludes zero;
* **equivalent** when the whole interval lies inside the practical margin
  fixed before any run (``config.EQUIVALENCE_MARGINS``: 0.005 Spearman,
  0.01 nDCG@10);
* otherwise **inconclusive**, with the number of seeds the observed spread
  would need to decide.

Every verdict names the interval, the seeds and, when it is known, the
baseline arm's gain over the untuned model: when training did not beat the
untuned model, comparing its settings says little, and the verdict says so.
Arms whose seeds do not pair fall back to Welch's unpaired interval.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from .config import EQUIVALENCE_MARGINS
from .results import mean_sd as _mean_sd

CONFIDENCE = 0.95
NO_VERDICT = "NO VERDICT (one seed per arm; run at workshop scale for several seeds)"
NO_VERDICT_WEAK_BASELINE = ("NO VERDICT (the baseline training did not beat the untuned model by more than the "
                            "margin, so these runs cannot tell settings apart)")
KEEPS_MARGIN = 0.01  # notebook 02's "keeps quality" claims: at most this much worse (non-inferiority)
MAX_SEEDS_SUGGESTED = 50


def default_margin(metric: str = "Spearman") -> float:
    """The equivalence margin for a metric name (``Spearman`` -> 0.005, ``nDCG@10`` -> 0.01).

    Notebooks 01-07: every verdict.
    """
    m = metric.lower()
    return EQUIVALENCE_MARGINS["ndcg@10"] if "ndcg" in m else EQUIVALENCE_MARGINS["spearman"]


def _field(r, key: str):
    if hasattr(r, "summary"):
        return r.summary()[key]
    return r[key]


def values(results, key: str = "test") -> np.ndarray:
    """One number per run: ``test`` (final test metric), ``dev`` (last/best dev metric), ``wall_s`` ...

    Notebooks 01-07: every verdict.
    """
    return np.asarray([_field(r, key) for r in results], dtype=float)


def seeds_of(results) -> list:
    """The seed of every run (``TrainResult.config["seed"]`` or a record's ``seed``); None where unknown.

    Notebooks 01-07: every verdict.
    """
    out = []
    for r in results:
        if hasattr(r, "config"):
            out.append(r.config.get("seed"))
        elif isinstance(r, dict):
            out.append(r.get("seed", (r.get("config") or {}).get("seed")))
        else:
            out.append(None)
    return out


def mean_sd(results, key: str = "test") -> tuple[float, float]:
    """Mean and sample standard deviation across runs (sd 0 for a single run; :func:`helpers.results.mean_sd`).

    Notebooks 01-07: every verdict.
    """
    return _mean_sd(values(results, key))


def fmt(results, key: str = "test", digits: int = 4) -> str:
    """``0.8412 ± 0.0031`` for a list of runs.

    Notebooks 01-07: every verdict.
    """
    m, s = mean_sd(results, key)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def t_interval(diffs, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The two-sided t interval of the mean of ``diffs`` (n - 1 degrees of freedom); (nan, nan) for one value.

    Notebooks 01-07: every verdict.
    """
    d = np.asarray(diffs, dtype=float)
    if len(d) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + confidence / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return float(d.mean() - half), float(d.mean() + half)


def seeds_needed(mean_diff: float, sd: float, margin: float, confidence: float = CONFIDENCE) -> int | None:
    """Fewest paired seeds whose interval, at the observed mean and spread, would exclude zero or fit the margin.
    Notebooks 01-07: every verdict.

    None when no number up to ``MAX_SEEDS_SUGGESTED`` would (the mean sits right at the margin's edge).
    """
    if sd == 0:
        return 2
    for n in range(2, MAX_SEEDS_SUGGESTED + 1):
        half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
        if half < abs(mean_diff) or abs(mean_diff) + half < margin:
            return n
    return None


@dataclass
class Comparison:
    """Arm A against arm B on one metric: per-seed differences, their interval and what it concludes.
    Notebooks 01-07: every verdict.

    ``diff`` and the interval are A - B in the metric's own direction (positive: A scores higher).
    ``untuned`` is the untuned model's score on the same metric, when known.
    """

    a: str
    b: str
    mean_a: float
    mean_b: float
    diff: float  # mean of A - B (paired) or difference of means (unpaired)
    low: float  # 95% interval of the difference
    high: float
    n_a: int
    n_b: int
    paired: bool = True
    sd_diff: float = 0.0  # sd of the per-seed differences (paired)
    margin: float = EQUIVALENCE_MARGINS["spearman"]
    untuned: float | None = None
    baseline: str = "b"  # which arm is "the training being tuned" for the gain line
    diffs: list = field(default_factory=list)
    key: str = "test"  # the split compared ("dev" or "test"), named in the verdict's "Measured (...)" line

    @property
    def n(self) -> int:
        return min(self.n_a, self.n_b)

    @property
    def stderr(self) -> float:
        """Half the interval divided by the t critical value (kept for tables)."""
        if self.n < 2 or not math.isfinite(self.high):
            return float("nan")
        return (self.high - self.low) / 2 / stats.t.ppf(0.5 + CONFIDENCE / 2, max(self.n - 1, 1))

    def outcome(self, higher_is_better: bool = True) -> str:
        """``better`` / ``worse`` (for A), ``equivalent``, ``inconclusive``, or ``one seed``."""
        if self.n < 2:
            return "one seed"
        if -self.margin < self.low and self.high < self.margin:
            return "equivalent"
        if self.low > 0 or self.high < 0:
            return "better" if (self.low > 0) == higher_is_better else "worse"
        return "inconclusive"

    @property
    def inside_noise(self) -> bool:
        """True when the interval includes zero (or there is one seed): no difference was shown."""
        return self.n < 2 or self.low <= 0 <= self.high

    @property
    def headline(self) -> str:
        """The two means and their difference, without any judgement (start of every verdict's sentence)."""
        word = "higher" if self.diff > 0 else "lower"
        return f"{self.a} {self.mean_a:.4f} vs {self.b} {self.mean_b:.4f}: {self.a} is {abs(self.diff):.4f} {word}"

    @property
    def interval_text(self) -> str:
        kind = "paired seeds" if self.paired else "unpaired (Welch)"
        if self.n < 2:
            return f"n={self.n} seed, no interval"
        return (f"95% interval of {self.a} - {self.b}: {self.low:+.4f} to {self.high:+.4f} "
                f"({self.n} {kind}; margin ±{self.margin:g})")

    @property
    def baseline_gain(self) -> float | None:
        """The baseline arm's mean minus the untuned model's score (None when the untuned score is unknown)."""
        if self.untuned is None:
            return None
        return (self.mean_b if self.baseline == "b" else self.mean_a) - self.untuned

    @property
    def baseline_too_weak(self) -> bool:
        """True when the baseline training did not beat the untuned model by more than the margin: the
        experiment cannot decide anything about fine-tuning, whatever the arms' difference."""
        return self.baseline_gain is not None and self.baseline_gain <= self.margin

    @property
    def gain_text(self) -> str:
        """The baseline arm's gain over the untuned model, with a warning when training did not clearly help."""
        if self.untuned is None:
            return ""
        name = self.b if self.baseline == "b" else self.a
        gain = self.baseline_gain
        text = f"baseline {name} gains {gain:+.4f} over the untuned model ({self.untuned:.4f})"
        if self.baseline_too_weak:
            text += ("; training did not clearly beat the untuned model, so this comparison says little "
                     "about fine-tuning")
        return text

    def decided_by(self, higher_is_better: bool = True) -> str:
        """For an inconclusive result: how many seeds the observed spread would need."""
        if self.outcome(higher_is_better) != "inconclusive":
            return ""
        n = seeds_needed(self.diff, self.sd_diff, self.margin) if self.paired else None
        if n is None:
            return "more seeds would not decide it at this difference; a larger effect or a wider margin would"
        return f"about {n} paired seeds at this spread would decide it"

    def sentence(self, metric: str = "test score", higher_is_better: bool = True) -> str:
        parts = [self.headline, self.interval_text]
        if self.n >= 2:
            out = self.outcome(higher_is_better)
            word = {"better": f"{self.a} is better", "worse": f"{self.b} is better",
                    "equivalent": "equivalent within the margin" + (
                        "" if self.inside_noise else " (the interval excludes zero: a real difference, but smaller "
                                                     "than the margin)"),
                    "inconclusive": "inconclusive (" + self.decided_by(higher_is_better) + ")"}[out]
            parts.append(word)
        else:
            parts.append("one seed per arm: no noise estimate, so no verdict")
        if self.gain_text:
            parts.append(self.gain_text)
        return "; ".join(parts) + "."


def _pairs(a_results, b_results, key: str):
    """Values of both arms matched by seed, or None when the seeds do not pair one to one."""
    sa, sb = seeds_of(a_results), seeds_of(b_results)
    if None in sa or None in sb or len(set(sa)) != len(sa) or len(set(sb)) != len(sb):
        return None
    common = sorted(set(sa) & set(sb), key=str)
    if len(common) < 2:
        return None
    va = dict(zip(sa, values(a_results, key)))
    vb = dict(zip(sb, values(b_results, key)))
    return np.array([va[s] for s in common]), np.array([vb[s] for s in common])


def compare(a_name: str, a_results, b_name: str, b_results, key: str = "test", margin: float | None = None,
            untuned: float | None = None, metric: str = "Spearman", baseline: str = "b") -> Comparison:
    """Compare two arms on ``key``: paired by seed where the seeds match, else Welch's unpaired interval.
    Notebooks 01-07: every verdict.

    ``margin``: the equivalence margin (default: ``EQUIVALENCE_MARGINS`` for ``metric``).
    ``untuned``: the untuned model's score on the same key, for the baseline-gain line.
    """
    margin = default_margin(metric) if margin is None else margin
    pairs = _pairs(a_results, b_results, key)
    if pairs is not None:
        va, vb = pairs
        d = va - vb
        low, high = t_interval(d)
        return Comparison(a_name, b_name, float(va.mean()), float(vb.mean()), float(d.mean()), low, high,
                          len(va), len(vb), True, float(d.std(ddof=1)), margin, untuned, baseline, d.tolist(), key)
    va, vb = values(a_results, key), values(b_results, key)
    diff = float(va.mean() - vb.mean()) if len(va) and len(vb) else float("nan")
    if len(va) < 2 or len(vb) < 2:
        low = high = float("nan")
    else:
        ea, eb = va.var(ddof=1) / len(va), vb.var(ddof=1) / len(vb)
        se = math.sqrt(ea + eb)
        df = (ea + eb) ** 2 / ((ea ** 2) / (len(va) - 1) + (eb ** 2) / (len(vb) - 1)) if se > 0 else 1.0
        half = stats.t.ppf(0.5 + CONFIDENCE / 2, df) * se
        low, high = diff - half, diff + half
    return Comparison(a_name, b_name, float(va.mean()), float(vb.mean()), diff, low, high, len(va), len(vb),
                      False, 0.0, margin, untuned, baseline, key=key)


def movement(name: str, results, untuned: float, key: str = "dev", metric: str = "Spearman",
             margin: float | None = None) -> str:
    """Did this training move the model? The untuned score, the mean after training over seeds, the change,
    and whether it exceeds the equivalence margin: where it does not, settings compared on these runs
    cannot decide a claim (notebooks 02-04: the STS-B runs at workshop scale).
    """
    margin = default_margin(metric) if margin is None else margin
    v = values(results, key)
    change = float(v.mean()) - untuned
    text = (f"{name}: {key} {metric} {untuned:.4f} untuned -> {v.mean():.4f} after training "
            f"(mean of {len(v)} seed{'s' if len(v) != 1 else ''}), a change of {change:+.4f}")
    if change > margin:
        return text + f", more than the {margin:g} margin: these runs can compare settings."
    return text + (f", no more than the {margin:g} margin: these runs cannot tell settings apart, "
                   "so they give no verdicts.")


STATUS = {
    "supported": "SUPPORTED",
    "contradicted": "CONTRADICTED",
    "no difference": "NO DIFFERENCE (equivalent within the margin)",
    "inconclusive": "INCONCLUSIVE",
}


def judge(comparison: Comparison, expect: str = "a_better", higher_is_better: bool = True) -> str:
    """What the comparison says about a claim: ``supported``, ``contradicted``, ``no difference``,
    ``inconclusive`` or ``no verdict``.
    Notebooks 01-07: every verdict.

    ``expect``: ``a_better`` (the claim says A beats B), ``b_better``, ``a_not_worse`` (A keeps B's
    quality: non-inferiority within the margin) or ``equivalent`` (the claim says it makes no difference).
    """
    c = comparison
    out = c.outcome(higher_is_better)
    if out == "one seed" or c.baseline_too_weak:  # one seed has no interval; a weak baseline decides nothing
        return "no verdict"
    if expect in ("a_better", "b_better"):
        want = "better" if expect == "a_better" else "worse"
        if out == want:
            return "supported"
        if out in ("better", "worse"):
            return "contradicted"
        return "no difference" if out == "equivalent" else "inconclusive"
    gain_low, gain_high = (c.low, c.high) if higher_is_better else (-c.high, -c.low)
    if expect == "a_not_worse":
        if gain_low > -c.margin:
            return "supported"
        return "contradicted" if gain_high < -c.margin else "inconclusive"
    if expect == "equivalent":
        if out == "equivalent":
            return "supported"
        return "contradicted" if (gain_low > c.margin or gain_high < -c.margin) else "inconclusive"
    raise ValueError(f"Unknown expectation {expect!r}; use a_better, b_better, a_not_worse or equivalent.")


def verdict(claim: str, comparison: Comparison, supported_if_a_better: bool = True, metric: str | None = None,
            higher_is_better: bool = True, expect: str | None = None) -> str:
    """One computed paragraph: the claim, what was measured (with the interval), and the verdict.
    ``metric`` names what was measured (default: the compared split, e.g. "dev score").

    Notebooks 01-07: every verdict.
    """
    expect = expect or ("a_better" if supported_if_a_better else "b_better")
    metric = metric or f"{comparison.key} score"
    j = judge(comparison, expect, higher_is_better)
    if j == "no verdict" and comparison.baseline_too_weak and comparison.n >= 2:
        status = NO_VERDICT_WEAK_BASELINE
    else:
        status = NO_VERDICT if j == "no verdict" else STATUS[j]
    if j == "inconclusive":
        extra = comparison.decided_by(higher_is_better)
        status += f" ({extra})" if extra else ""
    return f"Claim: {claim}\nMeasured ({metric}): {comparison.sentence(metric, higher_is_better)}\nVerdict: {status}."


def verdict_keeps(claim: str, comparison: Comparison, margin: float = KEEPS_MARGIN, metric: str | None = None,
                  higher_is_better: bool = True) -> str:
    """A verdict for claims that A *keeps* B's quality (notebook 02: freezing, layer-wise rates).

    "No difference shown" is not evidence that nothing was lost, so these claims get a
    non-inferiority test on the 95% interval: SUPPORTED when its pessimistic end loses
    less than ``margin``; CONTRADICTED when even its optimistic end loses more.
    """
    c = Comparison(**{**comparison.__dict__, "margin": margin})
    return verdict(claim, c, metric=metric, higher_is_better=higher_is_better, expect="a_not_worse")


def results_table(results_by_arm: dict, keys=("dev", "test", "wall_s")):
    """A pandas table: one row per arm, ``mean ± sd`` per key, and the number of seeds.

    Notebooks 01-07: every verdict.
    """
    import pandas as pd

    rows = []
    for arm, results in results_by_arm.items():
        row = {"arm": arm, "seeds": len(results)}
        for k in keys:
            row[k] = fmt(results, k, 1 if k == "wall_s" else 4)
        rows.append(row)
    return pd.DataFrame(rows).set_index("arm")
