"""Is an arm better than its baseline? Welch's t-test, a bootstrap interval and an effect size.

Each claim compares a few seeds per arm (three, usually), so the tests are the ones that
assume little: Welch's t-test does not assume equal variances, and the percentile bootstrap
of the difference of means does not assume normality (with three seeds per arm it is coarse,
which is why the verdict asks both to agree). Both come from scipy.

The verdict rule, for a metric where `lower_is_better` (bits per char, by default):

- **supported**: the arm beats the baseline in the claimed direction by at least `min_effect`
  (the mean difference), Welch's p < `alpha`, and the bootstrap interval excludes 0;
- **not supported**: the bootstrap interval lies inside ±`min_effect` (no effect worth the
  name, measured), or the arm is significantly *worse* (p < `alpha`, interval excluding 0 on
  the wrong side);
- **depends**: anything else: an effect that is there in the means but not beyond the seed
  noise, or an interval too wide to rule an effect in or out. `combine` turns the verdicts of
  one claim over several regimes into one: all supported -> supported, none -> not supported,
  a mix -> depends (on the regime; the doc names which).
"""

from __future__ import annotations

import math
import statistics
from typing import NamedTuple, Sequence

import numpy as np
from scipy import stats

VERDICTS = ("supported", "not supported", "depends")


class Comparison(NamedTuple):
    """arm minus baseline: mean difference, its bootstrap interval, Cohen's d and Welch's test."""

    difference: float
    ci_low: float
    ci_high: float
    cohens_d: float
    t: float
    p: float
    df: float


def welch(arm: Sequence[float], baseline: Sequence[float]) -> tuple[float, float, float]:
    """Welch's two-sided t-test of mean(arm) = mean(baseline): (t, p, degrees of freedom)."""
    res = stats.ttest_ind(np.asarray(arm, float), np.asarray(baseline, float), equal_var=False)
    return float(res.statistic), float(res.pvalue), float(res.df)


def bootstrap_ci(arm: Sequence[float], baseline: Sequence[float], *, confidence: float = 0.95,
                 n_resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(arm) - mean(baseline), each sample resampled on its own."""
    res = stats.bootstrap((np.asarray(arm, float), np.asarray(baseline, float)),
                          lambda a, b, axis: np.mean(a, axis=axis) - np.mean(b, axis=axis),
                          n_resamples=n_resamples, confidence_level=confidence, method="percentile",
                          vectorized=True, paired=False, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def cohens_d(arm: Sequence[float], baseline: Sequence[float]) -> float:
    """(mean(arm) - mean(baseline)) / pooled sample standard deviation; inf when both are constant."""
    n1, n2 = len(arm), len(baseline)
    pooled = math.sqrt(((n1 - 1) * statistics.variance(arm) + (n2 - 1) * statistics.variance(baseline))
                       / (n1 + n2 - 2))
    diff = statistics.fmean(arm) - statistics.fmean(baseline)
    if pooled == 0.0:
        return 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
    return diff / pooled


def compare(arm: Sequence[float], baseline: Sequence[float], *, confidence: float = 0.95,
            seed: int = 0) -> Comparison:
    """Every figure the verdict uses, for one arm against its baseline (at least 2 values each)."""
    if len(arm) < 2 or len(baseline) < 2:
        raise ValueError(f"a comparison needs at least 2 values per arm, got {len(arm)} and {len(baseline)}")
    low, high = bootstrap_ci(arm, baseline, confidence=confidence, seed=seed)
    t, p, df = welch(arm, baseline)
    return Comparison(statistics.fmean(arm) - statistics.fmean(baseline), low, high, cohens_d(arm, baseline),
                      t, p, df)


def verdict(c: Comparison, *, lower_is_better: bool = True, alpha: float = 0.05, min_effect: float = 0.0) -> str:
    """"supported", "not supported" or "depends" by the rule in the module docstring."""
    sign = -1.0 if lower_is_better else 1.0  # the claimed direction of arm - baseline
    gain = sign * c.difference
    low, high = sorted((sign * c.ci_low, sign * c.ci_high))
    significant = c.p < alpha  # nan (both arms constant and equal) compares False
    if significant and low > 0 and gain >= min_effect:
        return "supported"
    if (significant and high < 0) or (-min_effect < low and high < min_effect):
        return "not supported"
    return "depends"


def combine(verdicts: Sequence[str]) -> str:
    """One claim's verdict over several regimes or arms: unanimous, or "depends"."""
    if not verdicts or any(v not in VERDICTS for v in verdicts):
        raise ValueError(f"verdicts {list(verdicts)} must be a non-empty list of {VERDICTS}")
    return verdicts[0] if len(set(verdicts)) == 1 else "depends"
