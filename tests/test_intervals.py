"""Exact binomial intervals and the exact McNemar test (``leukedge.evaluation.stats``)."""

from __future__ import annotations

import math

import pytest

from leukedge.evaluation.stats import (
    beta_cdf,
    beta_quantile,
    clopper_pearson,
    fraction,
    mcnemar,
    paired,
    proportion,
)


@pytest.mark.parametrize(
    ("k", "n", "text"),
    [
        (138, 138, "138/138 (97.4-100.0%)"),
        (137, 138, "137/138 (96.0-100.0%)"),
        (0, 10, "0/10 (0.0-30.8%)"),
        (485, 490, "485/490 (97.6-99.7%)"),  # issue 31: held-back fields of the same hospital
    ],
)
def test_known_exact_intervals(k, n, text):
    assert fraction(proportion(k, n)) == text


def test_closed_forms_and_symmetry():
    """At the extremes the exact interval has a closed form: (alpha/2)^(1/n)."""
    for n in (1, 10, 138, 2766):
        assert clopper_pearson(n, n)[0] == pytest.approx(0.025 ** (1 / n), abs=1e-12)
        assert clopper_pearson(0, n)[1] == pytest.approx(1 - 0.025 ** (1 / n), abs=1e-12)
    for k, n in ((1, 7), (50, 100), (13, 138)):
        lo, hi = clopper_pearson(k, n)
        mirror = clopper_pearson(n - k, n)
        assert lo == pytest.approx(1 - mirror[1], abs=1e-12) and lo < k / n < hi
    assert clopper_pearson(50, 100) == pytest.approx((0.3983, 0.6017), abs=1e-4)  # R binom.test


def test_beta_cdf_and_quantile_agree():
    assert beta_cdf(0.3, 1, 1) == pytest.approx(0.3)
    assert beta_cdf(0.5, 2, 2) == pytest.approx(0.5)
    assert beta_cdf(0.2, 3, 1) == pytest.approx(0.2**3)
    for q, a, b in ((0.025, 5, 96), (0.975, 138, 1), (0.5, 0.5, 0.5)):
        assert beta_cdf(beta_quantile(q, a, b), a, b) == pytest.approx(q, abs=1e-12)


def test_no_zero_width_and_bad_counts():
    for k, n in ((0, 1), (1, 1), (0, 3000), (3000, 3000)):
        lo, hi = clopper_pearson(k, n)
        assert hi - lo > 0
    with pytest.raises(ValueError):
        clopper_pearson(5, 4)
    assert proportion(0, 0) == {"k": 0, "n": 0, "value": None, "ci": None}


def test_mcnemar_exact_p_values():
    assert mcnemar(0, 0) == 1.0
    assert mcnemar(1, 0) == 1.0  # one discordant field: a coin toss
    assert mcnemar(0, 5) == pytest.approx(2 / 32)
    assert mcnemar(6, 0) == pytest.approx(2 / 64)
    assert mcnemar(2, 10) == pytest.approx(2 * (1 + 12 + 66) / 2**12)
    assert mcnemar(3, 4) == mcnemar(4, 3) <= 1.0


def test_paired_counts_and_verdict():
    a = [True] * 130 + [False] * 8
    b = [True] * 137 + [False]
    result = paired(a, b, ("old", "new"))
    assert (result["both_right"], result["only_a_right"], result["only_b_right"]) == (130, 0, 7)
    assert result["both_wrong"] == 1 and result["n"] == 138
    assert result["p_value"] == pytest.approx(2 / 128)
    assert result["verdict"] == "new is right more often"
    one_apart = paired([True] * 137 + [False], [True] * 138)
    assert one_apart["p_value"] == 1.0 and one_apart["verdict"] == "no measurable difference"
    with pytest.raises(ValueError, match="same fields"):
        paired([True], [True, False])
    assert math.isclose(paired([], [])["p_value"], 1.0)
