import math

import pytest

from gptjax.eval.significance import Comparison, bootstrap_ci, cohens_d, combine, compare, verdict, welch


def t4_cdf(t: float) -> float:
    """Student's t CDF with 4 degrees of freedom, in closed form."""
    x = t * t / 4
    return 0.5 + 3 / 8 * t / math.sqrt(1 + x) * (1 - t * t / (12 * (1 + x)))


def test_welch_equal_variances_by_hand():
    # means 2 and 5, sample variances 1 and 1: se = sqrt(1/3 + 1/3), df = 4.
    t, p, df = welch([1, 2, 3], [4, 5, 6])
    assert t == pytest.approx(-3 / math.sqrt(2 / 3))
    assert df == pytest.approx(4.0)
    assert p == pytest.approx(2 * t4_cdf(-3 / math.sqrt(2 / 3)), rel=1e-9)


def test_welch_unequal_variances_by_hand():
    # variances 5/3 (n=4) and 4 (n=3): se^2 = 5/12 + 4/3 = 1.75; Welch-Satterthwaite df.
    t, _, df = welch([1, 2, 3, 4], [2, 4, 6])
    assert t == pytest.approx(-1.5 / math.sqrt(1.75))
    assert df == pytest.approx(1.75 ** 2 / ((5 / 12) ** 2 / 3 + (4 / 3) ** 2 / 2))


def test_cohens_d_by_hand():
    assert cohens_d([1, 2, 3], [4, 5, 6]) == pytest.approx(-3.0)
    assert cohens_d([1, 2, 3, 4], [2, 4, 6]) == pytest.approx(-1.5 / math.sqrt((3 * 5 / 3 + 2 * 4) / 5))
    assert cohens_d([2, 2], [1, 1]) == math.inf


def test_bootstrap_interval():
    assert bootstrap_ci([1, 1, 1], [3, 3, 3]) == (-2.0, -2.0)
    low, high = bootstrap_ci([1, 2, 3], [4, 5, 6])
    # Resampled means lie in [1, 3] and [4, 6]: the interval is inside [-5, -1] and holds -3.
    assert -5 <= low < -3 < high <= -1
    assert bootstrap_ci([1, 2, 3], [4, 5, 6], seed=3) == bootstrap_ci([1, 2, 3], [4, 5, 6], seed=3)
    assert bootstrap_ci([1, 2, 3], [4, 5, 6], confidence=0.5)[0] > low


def test_verdicts():
    better = compare([1, 2, 3], [4, 5, 6])
    assert verdict(better) == "supported"
    assert verdict(better, lower_is_better=False) == "not supported"  # significantly the wrong way
    assert verdict(better, min_effect=3.5) == "depends"  # real, but smaller than what counts
    assert verdict(compare([1, 3, 5], [2, 4, 6])) == "depends"  # inside the seed noise
    same = compare([1.000, 1.001, 1.002], [1.0005, 1.0015, 1.0008])
    assert verdict(same, min_effect=0.01) == "not supported"  # measured to be no effect worth the name
    assert verdict(Comparison(-0.2, -0.3, -0.1, -2.0, -4.0, 0.01, 4.0)) == "supported"


def test_combine():
    assert combine(["supported", "supported"]) == "supported"
    assert combine(["not supported"]) == "not supported"
    assert combine(["supported", "not supported"]) == "depends"
    with pytest.raises(ValueError):
        combine(["maybe"])
