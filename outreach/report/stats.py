"""Statistics for reply rates, each defined for every input (no NaN, no division error).

* Wilson score interval for one proportion (Wilson 1927; Newcombe 1998, method 3)
* Newcombe's hybrid score interval for a difference of proportions (1998, method 10)
* Fisher's exact test, two-sided (scipy)
* Cochran–Mantel–Haenszel test across strata (liaisons), with continuity correction,
  and the Mantel–Haenszel common odds ratio
* sample size per arm to detect a lift at a given power (normal approximation, pooled)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    if n <= 0:
        return (0.0, 1.0)  # nothing observed: the rate could be anything
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def newcombe(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """95% interval for p1 − p2 (hybrid score, Newcombe 1998 method 10)."""
    if n1 <= 0 or n2 <= 0:
        return (-1.0, 1.0)
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    d = p1 - p2
    lower = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    upper = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return (max(-1.0, lower), min(1.0, upper))


def fisher_p(x1: int, n1: int, x2: int, n2: int) -> float:
    if n1 <= 0 or n2 <= 0:
        return 1.0
    _, p = stats.fisher_exact([[x1, n1 - x1], [x2, n2 - x2]], alternative="two-sided")
    return float(min(1.0, max(0.0, p)))


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
    if correction:
        diff = max(0.0, diff - 0.5)
    statistic = diff * diff / sum_v
    return Cmh(statistic, float(stats.chi2.sf(statistic, 1)), odds, used)


def sample_size_per_arm(
    baseline: float, lift: float, alpha: float = 0.05, power: float = 0.8
) -> int | None:
    """Recipients per arm to detect ``baseline`` → ``baseline + lift`` (two-sided)."""
    p1 = min(max(baseline, 1e-6), 1 - 1e-6)
    p2 = p1 + lift
    if not 0 < p2 < 1 or lift == 0:
        return None
    z_a = float(stats.norm.ppf(1 - alpha / 2))
    z_b = float(stats.norm.ppf(power))
    pbar = (p1 + p2) / 2
    n = (
        z_a * math.sqrt(2 * pbar * (1 - pbar)) + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    ) ** 2
    return math.ceil(n / (lift * lift))


def rate(successes: int, n: int) -> float:
    return successes / n if n > 0 else 0.0
