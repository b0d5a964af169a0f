"""Statistics for reply rates, each defined for every input (no NaN, no division error).

* Wilson score interval for one proportion (Wilson 1927; Newcombe 1998, method 3)
* Newcombe's hybrid score interval for a difference of proportions (1998, method 10)
* Fisher's exact test, two-sided (the hypergeometric tails; as R and scipy: every table
  no more probable than the observed one, with a relative tolerance of 1e-7 for ties)
* Cochran–Mantel–Haenszel test across strata (liaisons), with continuity correction,
  and the Mantel–Haenszel common odds ratio
* sample size per arm to detect a lift at a given power (normal approximation, pooled)

Pure Python on purpose: importing scipy.stats costs ~0.7 s, a quarter of the report's
time budget; the tests check every figure against scipy and statsmodels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    if n <= 0:
        return (0.0, 1.0)  # nothing observed: the rate could be anything
    successes = min(max(successes, 0), n)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # The exact endpoints at 0/n and n/n are 0 and 1; rounding must not leave the interval
    # a hair short of the point estimate (10/10 gave 0.9999999999999999).
    low = 0.0 if successes == 0 else max(0.0, min(p, centre - half))
    high = 1.0 if successes == n else min(1.0, max(p, centre + half))
    return (low, high)


def newcombe(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """95% interval for p1 − p2 (hybrid score, Newcombe 1998 method 10)."""
    if n1 <= 0 or n2 <= 0:
        return (-1.0, 1.0)
    x1, x2 = min(max(x1, 0), n1), min(max(x2, 0), n2)
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    d = p1 - p2
    lower = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    upper = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return (max(-1.0, lower), min(1.0, upper))


def _lchoose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


_TIE = math.log1p(1e-7)  # R's fisher.test: tables within 1e-7 of the observed one count
_NEGLIGIBLE = 50.0  # terms below e^-50 of the observed table's probability


def fisher_p(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p of Fisher's exact test for replied x1/n1 versus x2/n2."""
    if n1 <= 0 or n2 <= 0:
        return 1.0
    x1, x2 = min(max(x1, 0), n1), min(max(x2, 0), n2)
    total, replied = n1 + n2, x1 + x2
    lo, hi = max(0, replied - n2), min(n1, replied)
    if lo == hi:
        return 1.0
    norm = _lchoose(total, n1)

    def lp(k: int) -> float:  # log P(k replies in arm 1 | margins)
        return _lchoose(replied, k) + _lchoose(total - replied, n1 - k) - norm

    mode = min(max((n1 + 1) * (replied + 1) // (total + 2), lo), hi)
    threshold = lp(x1) + _TIE
    if lp(mode) <= threshold:
        return 1.0
    # The distribution is unimodal: on the left of the mode the tables as improbable as the
    # observed one are lo..left, on the right right..hi. Find both edges by bisection.
    a, b = lo, mode  # lp(a..left) <= threshold < lp(mode)
    if lp(a) > threshold:
        left = lo - 1
    else:
        while b - a > 1:
            mid = (a + b) // 2
            a, b = (mid, b) if lp(mid) <= threshold else (a, mid)
        left = a
    a, b = mode, hi  # lp(mode) > threshold >= lp(right..hi)
    if lp(b) > threshold:
        right = hi + 1
    else:
        while b - a > 1:
            mid = (a + b) // 2
            a, b = (a, mid) if lp(mid) <= threshold else (mid, b)
        right = b
    floor = threshold - _TIE - _NEGLIGIBLE
    p = 0.0
    for k in range(left, lo - 1, -1):  # outward from the edge: the terms only shrink
        term = lp(k)
        if term < floor:
            break
        p += math.exp(term)
    for k in range(right, hi + 1):
        term = lp(k)
        if term < floor:
            break
        p += math.exp(term)
    return min(1.0, max(0.0, p))


@dataclass(frozen=True)
class Cmh:
    statistic: float
    p_value: float
    odds_ratio: float | None  # Mantel–Haenszel common odds ratio
    strata: int  # strata that carried information


def cmh(tables: Sequence[tuple[int, int, int, int]], correction: bool = True) -> Cmh:
    """Each table (a, b, c, d): arm 1 replied/not, arm 2 replied/not, within one stratum."""
    sum_a = sum_e = sum_v = 0.0
    num = den = 0.0
    used = 0
    for a, b, c, d in tables:
        n = a + b + c + d
        if n < 2:
            continue
        row1, row2, col1, col2 = a + b, c + d, a + c, b + d
        if row1 == 0 or row2 == 0:
            continue
        used += 1
        sum_a += a
        sum_e += row1 * col1 / n
        sum_v += row1 * row2 * col1 * col2 / (n * n * (n - 1))
        num += a * d / n
        den += b * c / n
    odds = (num / den) if den > 0 else None
    if sum_v <= 0:
        return Cmh(0.0, 1.0, odds, used)
    diff = abs(sum_a - sum_e)
    if correction and diff >= 0.5:
        # As R's mantelhaen.test: the continuity correction only where it does not
        # overshoot (statsmodels subtracts 0.5 regardless, and squares a negative).
        diff -= 0.5
    statistic = diff * diff / sum_v
    # chi-square with one degree of freedom: P(X > s) = erfc(sqrt(s / 2))
    return Cmh(statistic, math.erfc(math.sqrt(statistic / 2)), odds, used)


def sample_size_per_arm(
    baseline: float, lift: float, alpha: float = 0.05, power: float = 0.8
) -> int | None:
    """Recipients per arm to detect ``baseline`` → ``baseline + lift`` (two-sided)."""
    p1 = min(max(baseline, 1e-6), 1 - 1e-6)
    p2 = p1 + lift
    if not 0 < p2 < 1 or abs(lift) < 1e-9:  # no lift (or one too small to ever detect)
        return None
    z_a = NormalDist().inv_cdf(1 - alpha / 2)
    z_b = NormalDist().inv_cdf(power)
    pbar = (p1 + p2) / 2
    n = (
        z_a * math.sqrt(2 * pbar * (1 - pbar)) + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    ) ** 2
    needed = n / (lift * lift)
    return math.ceil(needed) if math.isfinite(needed) else None


def rate(successes: int, n: int) -> float:
    return successes / n if n > 0 else 0.0
