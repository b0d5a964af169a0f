"""The report's statistics against published worked examples and scipy/statsmodels, and
properties that must hold for every input (bounds, the point estimate inside, no NaN)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sps

from outreach.report.stats import cmh, fisher_p, newcombe, rate, sample_size_per_arm, wilson

sm_tables = pytest.importorskip("statsmodels.stats.contingency_tables")

# -- Wilson score interval: Newcombe (1998a), Statistics in Medicine 17:857-872, Table I,
#    method 3 ("score method without continuity correction").
WILSON_PUBLISHED = [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
    # further rows of the same table
    (0, 10, 0.0000, 0.2775),
    (10, 10, 0.7225, 1.0000),
    (29, 29, 0.8830, 1.0000),
]


@pytest.mark.parametrize(("x", "n", "low", "high"), WILSON_PUBLISHED)
def test_wilson_matches_newcombe_table_1(x: int, n: int, low: float, high: float) -> None:
    lo, hi = wilson(x, n)
    assert round(lo, 4) == pytest.approx(low, abs=1e-9)
    assert round(hi, 4) == pytest.approx(high, abs=1e-9)


def test_wilson_matches_statsmodels() -> None:
    from statsmodels.stats.proportion import proportion_confint

    for x, n in [(0, 1), (1, 1), (3, 7), (17, 1000), (999, 1000), (5, 5), (0, 3000)]:
        lo, hi = proportion_confint(x, n, alpha=0.05, method="wilson")
        assert wilson(x, n) == pytest.approx((lo, hi), abs=1e-9)


def test_wilson_endpoints_are_exact_at_zero_and_all() -> None:
    # 10/10 used to give an upper bound of 0.9999999999999999: below the estimate itself
    assert wilson(10, 10)[1] == 1.0
    assert wilson(0, 10)[0] == 0.0
    assert wilson(0, 0) == (0.0, 1.0)  # nothing observed: anything is possible


# -- Newcombe's hybrid score interval for p1 - p2: Newcombe (1998b), Statistics in Medicine
#    17:873-890, Table II, method 10.
NEWCOMBE_PUBLISHED = [
    ((56, 70, 48, 80), (0.0524, 0.3339)),
    ((9, 10, 3, 10), (0.1705, 0.8090)),
    ((6, 7, 2, 7), (0.0582, 0.8062)),
    ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ((0, 10, 0, 20), (-0.1611, 0.2775)),
    ((0, 10, 0, 10), (-0.2775, 0.2775)),
    ((10, 10, 0, 20), (0.6791, 1.0000)),
    ((10, 10, 0, 10), (0.6075, 1.0000)),
]


@pytest.mark.parametrize(("counts", "expected"), NEWCOMBE_PUBLISHED)
def test_newcombe_matches_table_2_method_10(
    counts: tuple[int, int, int, int], expected: tuple[float, float]
) -> None:
    lo, hi = newcombe(*counts)
    assert round(lo, 4) == pytest.approx(expected[0], abs=1e-9)
    assert round(hi, 4) == pytest.approx(expected[1], abs=1e-9)


def test_newcombe_with_an_empty_arm_is_the_whole_range() -> None:
    assert newcombe(3, 10, 0, 0) == (-1.0, 1.0)
    assert newcombe(0, 0, 0, 0) == (-1.0, 1.0)


# -- Fisher's exact test, two-sided


def _scipy_fisher(x1: int, n1: int, x2: int, n2: int) -> float:
    _, p = sps.fisher_exact([[x1, n1 - x1], [x2, n2 - x2]], alternative="two-sided")
    return min(1.0, float(p))


@pytest.mark.parametrize(
    "counts",
    [
        (3, 10, 1, 10),
        (0, 10, 0, 20),
        (10, 10, 0, 10),
        (56, 70, 48, 80),
        (1, 2, 30, 400),
        (5, 10, 5, 10),  # symmetric: ties on both tails
        (7, 20, 13, 20),
    ],
)
def test_fisher_matches_scipy(counts: tuple[int, int, int, int]) -> None:
    assert fisher_p(*counts) == pytest.approx(_scipy_fisher(*counts), rel=1e-9)


@pytest.mark.parametrize(
    "counts",
    [
        (60000, 500000, 50000, 500000),  # the benchmark's size: p ~ 1e-224
        (60000, 500000, 59800, 500000),
        (3, 400000, 0, 400000),
        (1500, 9000, 1400, 9100),
    ],
)
def test_fisher_matches_scipy_for_large_tables(counts: tuple[int, int, int, int]) -> None:
    # log-gamma of a million carries ~1e-9 relative error: ample for a p printed to 3 digits
    assert fisher_p(*counts) == pytest.approx(_scipy_fisher(*counts), rel=1e-6)


@given(
    st.integers(1, 300).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
    st.integers(1, 300).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
)
def test_fisher_matches_scipy_everywhere(a: tuple[int, int], b: tuple[int, int]) -> None:
    (x1, n1), (x2, n2) = a, b
    assert fisher_p(x1, n1, x2, n2) == pytest.approx(
        _scipy_fisher(x1, n1, x2, n2), rel=1e-9, abs=1e-300
    )


def test_fisher_published_tea_tasting() -> None:
    # Fisher's lady tasting tea, 3 of 4 right in each row: two-sided p = 34/70
    assert fisher_p(3, 4, 1, 4) == pytest.approx(34 / 70, rel=1e-9)


def test_fisher_with_an_empty_arm_is_one() -> None:
    assert fisher_p(0, 0, 3, 10) == 1.0


# -- Cochran-Mantel-Haenszel

# R's ?mantelhaen.test example (Rabbits: penicillin level strata, delay x cure):
# "Mantel-Haenszel X-squared = 3.9286, df = 1, p-value = 0.04747; common odds ratio 7"
RABBITS = [(0, 6, 0, 5), (3, 3, 0, 6), (6, 0, 2, 4), (5, 1, 6, 0), (2, 0, 5, 0)]


def test_cmh_matches_r_rabbits_example() -> None:
    m = cmh(RABBITS)
    assert m.statistic == pytest.approx(3.9286, abs=5e-5)
    assert m.p_value == pytest.approx(0.04747, abs=5e-6)
    assert m.odds_ratio == pytest.approx(7.0, abs=1e-9)


def _statsmodels(tables: list[tuple[int, int, int, int]]) -> tuple[float, float, float]:
    import numpy as np

    arr = np.array([[[a, b], [c, d]] for a, b, c, d in tables], dtype=float).transpose(1, 2, 0)
    st_ = sm_tables.StratifiedTable(arr)
    res = st_.test_null_odds(correction=True)
    return float(res.statistic), float(res.pvalue), float(st_.oddsratio_pooled)


@pytest.mark.parametrize(
    "tables",
    [
        RABBITS,
        [(30, 170, 20, 180), (12, 88, 9, 91), (40, 360, 25, 375)],  # liaisons, personal ahead
        [(5, 95, 5, 95), (10, 90, 2, 98)],
        [(0, 50, 3, 47), (1, 99, 4, 96), (2, 48, 2, 48)],
    ],
)
def test_cmh_matches_statsmodels(tables: list[tuple[int, int, int, int]]) -> None:
    statistic, pvalue, odds = _statsmodels(tables)
    m = cmh(tables)
    assert m.statistic == pytest.approx(statistic, rel=1e-9)
    assert m.p_value == pytest.approx(pvalue, rel=1e-9)
    assert m.p_value == pytest.approx(float(sps.chi2.sf(m.statistic, 1)), rel=1e-12)
    assert m.odds_ratio == pytest.approx(odds, rel=1e-9)
    assert m.strata == len(tables)


def test_cmh_uncorrected_matches_statsmodels() -> None:
    tables = [(30, 170, 20, 180), (12, 88, 9, 91)]
    import numpy as np

    arr = np.array([[[a, b], [c, d]] for a, b, c, d in tables], dtype=float).transpose(1, 2, 0)
    res = sm_tables.StratifiedTable(arr).test_null_odds(correction=False)
    assert cmh(tables, correction=False).statistic == pytest.approx(res.statistic, rel=1e-9)


def test_cmh_small_deviation_is_not_overcorrected() -> None:
    # |sum(a) - sum(E)| = 0.25 < 0.5: like R, no continuity correction (statsmodels would
    # subtract 0.5 and square the negative remainder, inflating the statistic).
    tables = [(1, 1, 1, 1), (1, 3, 0, 0), (1, 0, 0, 3)]
    m = cmh(tables)
    assert 0.0 <= m.statistic < 0.5
    assert 0.0 < m.p_value <= 1.0


def test_cmh_degenerate_strata_give_defined_output() -> None:
    assert cmh([]).p_value == 1.0
    m = cmh([(0, 0, 0, 0), (1, 0, 0, 0), (0, 5, 0, 0)])  # nothing comparable anywhere
    assert (m.statistic, m.p_value, m.odds_ratio, m.strata) == (0.0, 1.0, None, 0)
    m = cmh([(0, 10, 0, 10)])  # no replies at all: no variance
    assert m.p_value == 1.0 and not math.isnan(m.statistic)


# -- sample size per arm: Fleiss (1981), normal approximation without continuity correction,
#    n = [z_a sqrt(2 pbar qbar) + z_b sqrt(p1 q1 + p2 q2)]^2 / (p2 - p1)^2


def _fleiss(p1: float, p2: float) -> float:
    z_a, z_b = 1.959963984540054, 0.8416212335729143
    pbar = (p1 + p2) / 2
    num = z_a * math.sqrt(2 * pbar * (1 - pbar)) + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return num**2 / (p2 - p1) ** 2


def test_sample_size_textbook_value() -> None:
    assert _fleiss(0.10, 0.15) == pytest.approx(685.6, abs=0.1)
    assert sample_size_per_arm(0.10, 0.05) == 686
    for p1, lift in [(0.05, 0.05), (0.2, 0.1), (0.5, -0.1), (0.3, 0.02)]:
        assert sample_size_per_arm(p1, lift) == math.ceil(_fleiss(p1, p1 + lift))


def test_sample_size_close_to_statsmodels_arcsine_method() -> None:
    # a different (arcsine) approximation: the same order of magnitude, not the same number
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    es = proportion_effectsize(0.15, 0.10)
    arcsine = NormalIndPower().solve_power(es, alpha=0.05, power=0.8, ratio=1.0)
    assert sample_size_per_arm(0.10, 0.05) == pytest.approx(arcsine, rel=0.03)


def test_sample_size_impossible_lifts() -> None:
    assert sample_size_per_arm(0.1, 0.0) is None
    assert sample_size_per_arm(0.98, 0.05) is None
    assert sample_size_per_arm(0.0, 0.05) is not None  # baseline clamped, still defined


def test_rate_defined_at_zero() -> None:
    assert rate(0, 0) == 0.0 and rate(3, 4) == 0.75


# -- properties for every input

counts = st.integers(min_value=0, max_value=5000).flatmap(
    lambda n: st.tuples(st.integers(min_value=0, max_value=n), st.just(n))
)


def _ok(x: float) -> bool:
    return not math.isnan(x) and not math.isinf(x)


@given(counts)
def test_wilson_properties(xn: tuple[int, int]) -> None:
    x, n = xn
    lo, hi = wilson(x, n)
    assert _ok(lo) and _ok(hi)
    assert 0.0 <= lo <= hi <= 1.0
    p = rate(x, n)
    if n:
        assert lo <= p <= hi


@given(counts, counts)
def test_newcombe_properties(a: tuple[int, int], b: tuple[int, int]) -> None:
    (x1, n1), (x2, n2) = a, b
    lo, hi = newcombe(x1, n1, x2, n2)
    assert _ok(lo) and _ok(hi)
    assert -1.0 <= lo <= hi <= 1.0
    d = rate(x1, n1) - rate(x2, n2)
    assert lo <= d <= hi


@given(counts, counts)
def test_fisher_properties(a: tuple[int, int], b: tuple[int, int]) -> None:
    (x1, n1), (x2, n2) = a, b
    p = fisher_p(x1, n1, x2, n2)
    assert _ok(p) and 0.0 <= p <= 1.0


@given(st.lists(st.tuples(counts, counts), max_size=6))
def test_cmh_properties(strata: list[tuple[tuple[int, int], tuple[int, int]]]) -> None:
    tables = [(x1, n1 - x1, x2, n2 - x2) for (x1, n1), (x2, n2) in strata]
    m = cmh(tables)
    assert _ok(m.statistic) and m.statistic >= 0.0
    assert _ok(m.p_value) and 0.0 <= m.p_value <= 1.0
    assert m.odds_ratio is None or (_ok(m.odds_ratio) and m.odds_ratio >= 0.0)


@given(st.floats(0, 1, allow_nan=False), st.floats(-0.5, 0.5, allow_nan=False))
def test_sample_size_properties(baseline: float, lift: float) -> None:
    n = sample_size_per_arm(baseline, lift)
    assert n is None or (isinstance(n, int) and n >= 1)
