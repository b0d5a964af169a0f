"""The report's opening sentences: who answered how often from which sender, whether the
difference could be chance, and what it would take to know.

``compare`` turns one comparison's per-arm figures (a randomised experiment, or the
campaigns that were not randomised) into its statistics and a verdict; ``sentences`` says
them in plain English (the report has no language setting: it is written for the
library's staff, in English like the rest of the CLI). Every number a sentence shows is
formatted as the tables show it (``pct``, whole counts), so the two can be checked
against each other.
"""

from __future__ import annotations

from typing import Any

from outreach.report.formats import pct, pvalue
from outreach.report.stats import fisher_p, newcombe, rate, sample_size_per_arm

LIAISON, SERVICE = "liaison", "service"
RANDOMISED, OBSERVATIONAL = "randomised", "observational"
OBSERVATIONAL_LABEL = "observational — not randomised"
# Below this many delivered in the smaller group, an interval spans tens of points: the
# sentences say "too few to tell" rather than read a verdict into it.
TOO_FEW = 30
ALPHA = 0.05
POWER = 0.8
FALLBACK_BASELINE = 0.1  # the rate assumed when nothing was delivered (as the power note)


def points(x: float) -> str:
    return f"{x * 100:+.1f}"


def p_words(p: float) -> str:
    return f"p {pvalue(p)}"


def count(n: int) -> str:
    return f"{n:,}"


def _needed(base: float, target: float) -> int | None:
    """Researchers per group to tell ``base`` from ``target`` at 80% power (two-sided 5%);
    rates of exactly 0 or 1 are moved a hair inside so the formula stays defined."""
    edge = 1e-6
    base, target = min(max(base, edge), 1 - edge), min(max(target, edge), 1 - edge)
    return sample_size_per_arm(base, target - base, ALPHA, POWER)


def verdict(x1: int, n1: int, x2: int, n2: int, p: float, low: float, high: float) -> str:
    """What the comparison can say: ``nothing-delivered``, ``one-arm-empty``,
    ``no-replies``, ``too-few``, ``could-be-chance``, ``borderline`` (the exact test and
    the interval disagree) or ``unlikely-chance``."""
    if n1 <= 0 and n2 <= 0:
        return "nothing-delivered"
    if n1 <= 0 or n2 <= 0:
        return "one-arm-empty"
    if x1 + x2 == 0:
        return "no-replies"
    small = min(n1, n2)
    rejects, excludes_zero = p < ALPHA, low > 0 or high < 0
    if small < 10 or (small < TOO_FEW and not (rejects and excludes_zero)):
        return "too-few"
    if rejects and excludes_zero:
        return "unlikely-chance"
    if rejects or excludes_zero:
        return "borderline"
    return "could-be-chance"


def compare(
    kind: str,
    name: str,
    campaigns: list[str],
    arms: dict[str, dict[str, Any]],
    lift: float,
) -> dict[str, Any]:
    """One comparison of the liaison arm with the service arm: ``arms`` are figures
    objects (``delivered``, ``replied``, ``replied_weak`` …) of the same mail."""
    a, s = arms[LIAISON], arms[SERVICE]
    x1, n1, x2, n2 = a["replied"], a["delivered"], s["replied"], s["delivered"]
    both = n1 > 0 and n2 > 0
    low, high = newcombe(x1, n1, x2, n2)
    p = fisher_p(x1, n1, x2, n2)
    p1, p2 = rate(x1, n1), rate(x2, n2)
    estimate = p1 - p2 if both else 0.0
    needed = _needed(p2, p1) if both and abs(estimate) > 1e-9 else None
    basis = "observed"
    if needed is None:
        basis = "lift"
        baseline = p2 if n2 > 0 else (p1 if n1 > 0 else FALLBACK_BASELINE)
        baseline = baseline if baseline > 0 else 0.05
        # near 100% there is no room above the baseline: the same difference below it
        needed = sample_size_per_arm(baseline, lift, ALPHA, POWER) or sample_size_per_arm(
            baseline, -lift, ALPHA, POWER
        )
    if needed is not None:
        # the formula is a normal approximation, which does not hold for tiny groups
        # (below TOO_FEW the sentences say "too few to tell")
        needed = max(needed, TOO_FEW)
    have = min(n1, n2)
    comparison = {
        "id": name,
        "kind": kind,
        "randomised": kind == RANDOMISED,
        "label": f"randomised experiment {name}" if kind == RANDOMISED else OBSERVATIONAL_LABEL,
        "campaigns": campaigns,
        "arms": arms,
        "estimate": round(estimate, 6),
        "ci95": [round(low, 6), round(high, 6)],
        "p_value": round(p, 6),
        "verdict": verdict(x1, n1, x2, n2, p, low, high),
        "power": {
            "basis": basis,  # the observed difference, or --lift when there is none
            "difference": round(estimate if basis == "observed" else lift, 6),
            "needed_per_arm": needed,
            "have_per_arm": have,
            "enough": bool(both and needed is not None and have >= needed),
        },
    }
    comparison["sentences"] = sentences(comparison)
    return comparison


def _answered(figures: dict[str, Any]) -> str:
    replied, delivered = count(figures["replied"]), count(figures["delivered"])
    return f"{pct(figures['rate'])} of the time ({replied} of {delivered})"


def _where(c: dict[str, Any]) -> str:
    if c["kind"] == RANDOMISED:
        return f"In the randomised experiment {c['id']}"
    return "In the campaigns that were not randomised"


def _who(c: dict[str, Any]) -> str:
    return f"{_where(c)}, researchers"


def _weak(c: dict[str, Any]) -> str | None:
    a, s = c["arms"][LIAISON]["replied_weak"], c["arms"][SERVICE]["replied_weak"]
    if not a + s:
        return None
    many = a + s != 1
    return (
        f"{count(a + s)} more {'researchers' if many else 'researcher'} (liaison mail "
        f"{count(a)}, service mail {count(s)}) answered in a way matched only by their "
        f"address, which cannot be verified; {'those answers are' if many else 'that answer is'}"
        " not counted."
    )


def _first(c: dict[str, Any]) -> str:
    a, s, v = c["arms"][LIAISON], c["arms"][SERVICE], c["verdict"]
    if v == "nothing-delivered":
        where = (
            f"the randomised experiment {c['id']}"
            if c["kind"] == RANDOMISED
            else "the campaigns that were not randomised"
        )
        return f"Nothing has been delivered in {where} yet, so there are no answers to count."
    if v == "one-arm-empty":
        if a["delivered"] > 0:
            return (
                f"{_who(c)} who got the message from their own liaison answered {_answered(a)}; "
                "nothing from the service address was delivered, so there is nothing to "
                "compare it with."
            )
        return (
            f"{_who(c)} who got the message from the service address answered {_answered(s)}; "
            "nothing from their own liaison was delivered, so there is nothing to compare it "
            "with."
        )
    if v == "no-replies":
        nobody = "no one has" if not _weak(c) else "no one has verifiably"
        return (
            f"{_where(c)}, {nobody} answered yet: none of the {count(a['delivered'])} "
            "researchers who got the message from their own liaison, and none of the "
            f"{count(s['delivered'])} who got it from the service address."
        )
    return (
        f"{_who(c)} who got the message from their own liaison answered {_answered(a)}; "
        f"from the service address, {pct(s['rate'])} ({count(s['replied'])} of "
        f"{count(s['delivered'])})."
    )


def _chance(c: dict[str, Any]) -> str | None:
    v = c["verdict"]
    if v in ("nothing-delivered", "one-arm-empty"):
        return None
    if v == "no-replies":
        return "With no answers from either group there is no difference to judge yet."
    low, high = c["ci95"]
    span = f"between {points(low)} and {points(high)} percentage points"
    diff = f"{points(c['estimate'])} points"
    p = p_words(c["p_value"])
    if v == "too-few":
        small = c["power"]["have_per_arm"]
        return (
            f"With only {count(small)} researchers in the smaller group there are too few to "
            f"tell how much the sender matters: the true difference likely lies anywhere "
            f"{span} ({p})."
        )
    if v == "could-be-chance" and abs(c["estimate"]) < 0.0005:
        return (
            f"Both groups answered about equally often ({p}): the true difference likely lies "
            f"{span}."
        )
    if v == "could-be-chance":
        return (
            f"The difference of {diff} could well be chance ({p}): the true difference likely "
            f"lies {span}, which includes no difference at all."
        )
    if v == "borderline":
        return (
            f"The difference of {diff} is at the edge of what chance alone produces ({p}; "
            f"the true difference likely lies {span})."
        )
    seldom = (
        f"A difference of {diff} would seldom arise by chance alone ({p}; the true difference "
        f"likely lies {span})"
    )
    if c["kind"] == RANDOMISED:
        return f"{seldom}; the sender was chosen at random, so it can be put down to the sender."
    return (
        f"{seldom}, but the groups were not chosen at random, so it may reflect who was "
        "written to rather than who wrote."
    )


def _power(c: dict[str, Any]) -> str | None:
    power = c["power"]
    needed, have = power["needed_per_arm"], power["have_per_arm"]
    if needed is None:
        return None
    lift = f"a difference of {abs(power['difference']) * 100:.3g} percentage points"
    about = f"about {count(needed)} researchers per group"
    if c["verdict"] in ("nothing-delivered", "one-arm-empty"):
        return (
            "A comparison needs mail from both senders (a campaign with sender: split): "
            f"to detect {lift} with {POWER:.0%} power it would take {about}."
        )
    if power["basis"] == "observed":
        head = f"To detect a difference of this size with {POWER:.0%} power you would need {about}"
    else:
        head = f"To detect {lift} with {POWER:.0%} power you would need {about}"
    if power["enough"]:
        return f"{head}; with {count(have)} in the smaller group, this comparison has enough."
    return f"{head}; the smaller group here has {count(have)}."


def sentences(c: dict[str, Any]) -> list[str]:
    """Two to four sentences: the answers per sender (and the unverified ones left out),
    whether the difference could be chance, and the researchers per group it takes."""
    out = [_first(c)]
    for extra in (_weak(c), _chance(c), _power(c)):
        if extra:
            out.append(extra)
    return out


def nothing_sent() -> list[str]:
    return ["Nothing has been sent in this selection yet, so there are no answers to count."]
