"""Exact binomial statistics for counts of fields: Clopper-Pearson intervals and the exact
McNemar test (standard library only; scipy is not a dependency).

A proportion k/n of fields gets the exact (Clopper-Pearson) interval: it never has zero
width, so 138 of 138 fields right reads 97.4-100.0%, not a degenerate 100-100% of a
percentile bootstrap. Two models on the same fields are compared on the fields where they
disagree (``mcnemar``): with few discordant fields no difference is measurable however far
apart the two accuracies look.
"""

from __future__ import annotations

import math

#: Continued-fraction terms and bisection steps: far more than double precision needs.
_MAX_TERMS = 300
_BISECTIONS = 200
#: p-value at or above which two models show no measurable difference.
ALPHA = 0.05


def _beta_cf(x: float, a: float, b: float) -> float:
    """The continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, _MAX_TERMS + 1):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def beta_cdf(x: float, a: float, b: float) -> float:
    """The regularized incomplete beta function I_x(a, b): the Beta(a, b) CDF at x."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
        + b * math.log1p(-x)
    )  # fmt: skip
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_cf(x, a, b) / a
    return 1.0 - math.exp(log_front) * _beta_cf(1.0 - x, b, a) / b


def beta_quantile(q: float, a: float, b: float) -> float:
    """The ``q`` quantile of Beta(a, b), by bisection on ``beta_cdf`` (monotone, so it
    cannot fail to converge)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is not in [0, 1]")
    lo, hi = 0.0, 1.0
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        if beta_cdf(mid, a, b) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-15:
            break
    return 0.5 * (lo + hi)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact two-sided ``level`` interval of a proportion of ``k`` successes in ``n``
    trials: (low, high), with low = 0 only when k = 0 and high = 1 only when k = n."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    tail = (1.0 - level) / 2.0
    low = 0.0 if k == 0 else beta_quantile(tail, k, n - k + 1)
    high = 1.0 if k == n else beta_quantile(1.0 - tail, k + 1, n - k)
    return low, high


def proportion(k: int, n: int, level: float = 0.95) -> dict:
    """``k`` of ``n`` as a JSON-ready dict: k, n, value and the exact interval ``ci``
    (value and ci None when n = 0: no field to measure on)."""
    if n == 0:
        return {"k": 0, "n": 0, "value": None, "ci": None}
    return {"k": int(k), "n": int(n), "value": k / n, "ci": list(clopper_pearson(k, n, level))}


def mcnemar(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value: ``only_a`` fields only model A got right, ``only_b``
    only model B; under no difference each discordant field is a fair coin."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def paired(correct_a, correct_b, names: tuple[str, str] = ("A", "B")) -> dict:
    """Two models on the same fields, given as per-field booleans (right or wrong): the
    discordant counts, the exact McNemar p-value and a verdict ("no measurable difference"
    when p >= ``ALPHA``, else which one is right more often: on the shortcut audit that is
    the worse model)."""
    a, b = [bool(x) for x in correct_a], [bool(x) for x in correct_b]
    if len(a) != len(b):
        raise ValueError(f"{len(a)} and {len(b)} fields: compare models on the same fields")
    both = sum(x and y for x, y in zip(a, b))
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    p = mcnemar(only_a, only_b)
    if p >= ALPHA:
        verdict = "no measurable difference"
    else:
        verdict = f"{names[0] if only_a > only_b else names[1]} is right more often"
    return {
        "models": list(names),
        "n": len(a),
        "both_right": both,
        "only_a_right": only_a,
        "only_b_right": only_b,
        "both_wrong": len(a) - both - only_a - only_b,
        "p_value": p,
        "verdict": verdict,
    }


def pct_interval(ci, digits: int = 1) -> str:
    """An interval as "97.4-100.0%"."""
    return f"{100 * ci[0]:.{digits}f}-{100 * ci[1]:.{digits}f}%"


def fraction(p: dict, digits: int = 1) -> str:
    """A ``proportion`` as "138/138 (97.4-100.0%)"."""
    if p["n"] == 0:
        return "0/0 (–)"
    return f"{p['k']}/{p['n']} ({pct_interval(p['ci'], digits)})"
