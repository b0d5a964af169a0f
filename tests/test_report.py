"""The report: every figure against a plain-Python recount over the inserted rows, the
reply-rate rules of docs/CONTRACTS.md, edge cases, the JSON contract, the CLI formats, PostgreSQL
giving the same figures as SQLite, and one end-to-end run (send → reply → ingest → report).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from foundation_helpers import Run, cli, copy_example, copy_example_sent
from report_helpers import (
    T0,
    WINDOW_DAYS,
    Contact,
    Dataset,
    Outcome,
    Resp,
    assert_all_finite,
    counts_of,
    group,
    insert_dataset,
    median,
    outcomes,
    random_dataset,
    sqlite_store,
    tally,
)
from scipy import stats as sps

from outreach.report.build import build_report
from outreach.report.formats import print_table, to_csv, to_html, to_json
from outreach.report.query import FAMILIARITY_CAP, Filters
from outreach.report.stats import newcombe, sample_size_per_arm, wilson
from outreach.store import Store, open_store

pytestmark = pytest.mark.timeout(120)

H = timedelta(hours=1)


def report_of(store: Store, filters: Filters | None = None, lift: float = 0.05) -> dict[str, Any]:
    data = build_report(store, WINDOW_DAYS, filters, lift)
    json.dumps(data, allow_nan=False)  # strict JSON: no NaN or Infinity anywhere
    assert_all_finite(data)
    return data


def build(tmp_path: Path, data: Dataset, name: str = "r.db") -> dict[str, Any]:
    store = sqlite_store(tmp_path / name)
    try:
        insert_dataset(store, data)
        return report_of(store)
    finally:
        store.close()


def all_formats(report: dict[str, Any]) -> None:
    from rich.console import Console

    buf = io.StringIO()
    print_table(report, Console(file=buf, width=160))
    assert "Per arm" in buf.getvalue()
    rows = list(csv.reader(io.StringIO(to_csv(report))))
    assert rows[0][:3] == ["section", "key", "arm"]
    assert all(len(r) == len(rows[0]) for r in rows)
    assert json.loads(to_json(report)) == report
    page = to_html(report)
    assert page.count("<svg") >= 1 and "nan" not in page.lower().replace("nanosecond", "")


# -- the random dataset against the recount --------------------------------------------


@pytest.fixture(scope="module")
def random_data() -> Dataset:
    return random_dataset()


@pytest.fixture(scope="module")
def random_store(tmp_path_factory: pytest.TempPathFactory, random_data: Dataset) -> Store:
    store = sqlite_store(tmp_path_factory.mktemp("rand") / "r.db")
    insert_dataset(store, random_data)
    yield store
    store.close()


@pytest.fixture(scope="module")
def random_report(random_store: Store) -> dict[str, Any]:
    return report_of(random_store)


def named(report: dict[str, Any], root: Path) -> dict[str, Any]:
    """The report as the CLI gives it in workspace ``root``: liaisons by name."""
    from outreach.report.workspace_report import liaison_names

    names = liaison_names(root)
    assert names  # the example workspace names its liaisons
    out = json.loads(json.dumps(report))
    for entry in out["liaisons"] + out["liaisons_by_arm"]:
        if entry["id"] in names:
            entry["name"] = names[entry["id"]]
    return out


def strip_clock(report: dict[str, Any]) -> dict[str, Any]:
    """The report without what runs to "now" (researcher-years of the inbound rate)."""
    out = json.loads(json.dumps(report))
    for e in out["inbound"]:
        e.pop("years")
        e.pop("per_researcher_year")
    return out


def _ids(table: list[dict[str, Any]], *keys: str) -> dict[Any, dict[str, int]]:
    out = {}
    for entry in table:
        key = tuple(entry[k] for k in keys) if len(keys) > 1 else entry[keys[0]]
        assert key not in out, f"duplicate row {key}"
        out[key] = counts_of(entry)
    return out


def _campaign_year(data: Dataset) -> dict[str, int]:
    first: dict[str, Any] = {}
    for m in data.mails:
        if m.status == "sent" and m.sent_at is not None:
            first[m.campaign] = min(first.get(m.campaign, m.sent_at), m.sent_at)
    return {c: t.year for c, t in first.items()}


def check_against_recount(report: dict[str, Any], data: Dataset, kept: list[Outcome]) -> None:
    meta = {c.id: c for c in data.campaigns}
    years = _campaign_year(data)
    assert counts_of(report["total"]) == tally(kept)
    for arm in ("liaison", "service"):
        assert counts_of(report["arms"][arm]) == tally([o for o in kept if o.mail.arm == arm])
    personal = [o for o in kept if o.mail.arm == "liaison"]
    expect = {
        "liaisons": (("id",), group(personal, lambda o: o.mail.liaison or "")),
        "liaisons_by_arm": (
            ("id", "arm"),
            group(kept, lambda o: (o.mail.liaison or "", o.mail.arm)),
        ),
        "faculties": (("id",), group(kept, lambda o: o.mail.faculty or "")),
        "departments": (("id",), group(kept, lambda o: o.mail.department or "")),
        "languages": (("id",), group(kept, lambda o: o.mail.lang)),
        "campaigns": (("id",), group(kept, lambda o: o.mail.campaign)),
        "experiments": (
            ("id",),
            group(
                [o for o in kept if meta[o.mail.campaign].experiment],
                lambda o: meta[o.mail.campaign].experiment,
            ),
        ),
        "years": (("id", "arm"), group(kept, lambda o: (years[o.mail.campaign], o.mail.arm))),
    }
    for section, (keys, expected) in expect.items():
        assert _ids(report[section], *keys) == expected, section
    for entry in report["campaigns"]:
        c = meta[entry["id"]]
        assert entry["experiment"] == c.experiment and entry["randomised"] == c.randomised
    # rate and interval of every row follow from its counts
    for section in (*expect, "familiarity"):
        for entry in report[section]:
            d, r = entry["delivered"], entry["replied"]
            assert entry["rate"] == round(r / d if d else 0.0, 6)
            assert entry["ci95"] == [round(v, 6) for v in wilson(r, d)]
    # familiarity: personal mail by earlier contacts with the same liaison, capped
    curve = group(personal, lambda o: min(o.mail.prior, FAMILIARITY_CAP))
    got = {
        e["earlier_contacts"]: {k: e[k] for k in ("sent", "delivered", "replied")}
        for e in report["familiarity"]
    }
    assert got == {b: {k: c[k] for k in ("sent", "delivered", "replied")} for b, c in curve.items()}
    assert all(
        e["capped"] == (e["earlier_contacts"] == FAMILIARITY_CAP) for e in report["familiarity"]
    )
    # the comparison
    a, s = tally(personal), tally([o for o in kept if o.mail.arm == "service"])
    x1, n1, x2, n2 = a["replied"], a["delivered"], s["replied"], s["delivered"]
    diff = report["difference"]
    assert diff["comparable"] is bool(n1 and n2)
    if n1 and n2:
        assert diff["estimate"] == round(x1 / n1 - x2 / n2, 6)
        assert diff["ci95"] == [round(v, 6) for v in newcombe(x1, n1, x2, n2)]
        _, p = sps.fisher_exact([[x1, n1 - x1], [x2, n2 - x2]])
        assert diff["p_value"] == pytest.approx(round(min(1.0, p), 6), abs=2e-6)
    else:
        assert (diff["estimate"], diff["ci95"], diff["p_value"]) == (0.0, [-1.0, 1.0], 1.0)
    assert diff["test"] == "fisher"
    randomised = bool(kept) and all(
        o.mail.campaign in meta and meta[o.mail.campaign].randomised for o in kept
    )
    assert diff["randomised"] is randomised
    assert ("observational" in diff["label"]) is (not randomised)
    # CMH across liaisons against statsmodels
    check_cmh(diff["stratified"], kept)
    # medians from the hourly histogram: within an hour of the exact median
    for arm in ("liaison", "service", None):
        exact = median([o.delay_hours for o in kept if arm in (None, o.mail.arm) and o.replied])
        figures = report["arms"][arm] if arm else report["total"]
        got_m = figures["median_hours_to_reply"]
        assert (got_m is None) == (exact is None)
        if exact is not None:
            assert abs(got_m - exact) <= 1.0, (arm, got_m, exact)
    for entry in report["liaisons"]:
        exact = median(
            [o.delay_hours for o in personal if (o.mail.liaison or "") == entry["id"] and o.replied]
        )
        if exact is None:
            assert entry["median_hours_to_reply"] is None
        else:
            assert abs(entry["median_hours_to_reply"] - exact) <= 1.0


def check_cmh(strat: dict[str, Any], kept: list[Outcome]) -> None:
    import numpy as np
    from statsmodels.stats.contingency_tables import StratifiedTable

    tables = []
    for liaison in sorted({o.mail.liaison or "" for o in kept}):
        a = tally(
            [o for o in kept if (o.mail.liaison or "") == liaison and o.mail.arm == "liaison"]
        )
        s = tally(
            [o for o in kept if (o.mail.liaison or "") == liaison and o.mail.arm == "service"]
        )
        if a["delivered"] and s["delivered"]:
            tables.append(
                [
                    [a["replied"], a["delivered"] - a["replied"]],
                    [s["replied"], s["delivered"] - s["replied"]],
                ]
            )
    assert strat["test"] == "cochran-mantel-haenszel"
    assert strat["strata"] == len(tables)
    if len(tables) >= 2:
        st = StratifiedTable(np.array(tables, dtype=float).transpose(1, 2, 0))
        res = st.test_null_odds(correction=True)
        assert strat["statistic"] == pytest.approx(float(res.statistic), abs=2e-6)
        assert strat["p_value"] == pytest.approx(float(res.pvalue), abs=2e-6)
        assert strat["common_odds_ratio"] == pytest.approx(float(st.oddsratio_pooled), abs=2e-6)


def test_figures_agree_with_a_python_recount(
    random_report: dict[str, Any], random_data: Dataset
) -> None:
    kept = outcomes(random_data)
    assert len(kept) > 600 and sum(o.replied for o in kept) > 80  # a meaningful sample
    check_against_recount(random_report, random_data, kept)
    assert random_report["difference"]["randomised"] is False  # a personal-only campaign is in
    assert random_report["difference"]["stratified"]["strata"] == 3


@pytest.mark.parametrize(
    ("filters", "keep"),
    [
        (Filters(campaign="split-2026"), lambda o: o.mail.campaign == "split-2026"),
        (Filters(experiment="ff-2025"), lambda o: o.mail.campaign == "split-2025"),
        (Filters(year=2026), lambda o: o.mail.sent_at.year == 2026),
        (Filters(year=2025), lambda o: o.mail.sent_at.year == 2025),
        (Filters(experiment="nonesuch"), lambda o: False),
    ],
    ids=["campaign", "experiment", "year-2026", "year-2025", "unknown-experiment"],
)
def test_filters_agree_with_the_recount(
    random_store: Store, random_data: Dataset, filters: Filters, keep: Any
) -> None:
    report = report_of(random_store, filters)
    kept = [o for o in outcomes(random_data) if keep(o)]
    check_against_recount(report, random_data, kept)
    if filters.campaign or filters.experiment == "ff-2025":
        assert report["difference"]["randomised"] is True
        assert report["difference"]["label"] == "randomised comparison"


def test_window_changes_what_counts(random_store: Store, random_data: Dataset) -> None:
    report = build_report(random_store, 7)
    kept = outcomes(random_data, window_days=7)
    assert counts_of(report["total"]) == tally(kept)
    assert report["total"]["replied"] < report_of(random_store)["total"]["replied"]


# -- the rules, one at a time ----------------------------------------------------------


def test_what_counts_as_a_reply(tmp_path: Path) -> None:
    d = Dataset()
    c = d.campaign("c1")
    twice = d.mail(c, "twice@uni.example", "liaison")
    d.respond(twice, "reply", 2 * H)
    d.respond(twice, "reply", 5 * H)  # the same researcher again: one replier
    auto = d.mail(c, "auto@uni.example", "liaison")
    d.respond(auto, "auto_reply", timedelta(minutes=1))  # never a reply
    hard = d.mail(c, "hard@uni.example", "liaison")
    d.respond(hard, "bounce_hard", timedelta(minutes=1))  # not delivered, not a reply
    hard_reply = d.mail(c, "hardreply@uni.example", "liaison")
    d.respond(hard_reply, "bounce_hard", timedelta(minutes=1))
    d.respond(hard_reply, "reply", 3 * H)  # bounced address: still not delivered
    late = d.mail(c, "late@uni.example", "liaison")
    d.respond(late, "reply", timedelta(days=WINDOW_DAYS, seconds=1))  # after the window
    edge = d.mail(c, "edge@uni.example", "liaison")
    d.respond(edge, "reply", timedelta(days=WINDOW_DAYS))  # exactly at the window: counts
    soft = d.mail(c, "soft@uni.example", "liaison")
    d.respond(soft, "bounce_soft", timedelta(minutes=1))
    d.respond(soft, "reply", 30 * H)  # delayed, then answered: delivered and replied
    undated = d.mail(c, "undated@uni.example", "liaison")
    d.responses.append(Resp(undated.email, c, "reply", None, T0 + 4 * H))  # ingested_at counts
    unsub = d.mail(c, "unsub@uni.example", "liaison")
    d.respond(unsub, "unsubscribe", H)
    d.mail(c, "silent@uni.example", "liaison")
    d.mail(c, "failed@uni.example", "liaison", status="failed", sent_at=None)
    d.responses.append(Resp("silent@uni.example", None, "reply", T0 + H))  # unmatched: no
    d.responses.append(Resp("silent@uni.example", "other", "reply", T0 + H))  # other campaign
    d.mail(c, "svc@uni.example", "service")
    report = build(tmp_path, d)
    arm = report["arms"]["liaison"]
    assert arm["sent"] == 10
    assert arm["bounce_hard"] == 2 and arm["delivered"] == 8
    assert arm["replied"] == 4  # twice, edge, soft, undated
    assert arm["rate"] == 0.5
    assert (arm["auto_reply"], arm["bounce_soft"], arm["unsubscribe"]) == (1, 1, 1)
    # first replies after 2 h, 4 h, 30 h, 720 h: median 17 h (hourly buckets: within 1 h)
    assert arm["median_hours_to_reply"] == pytest.approx(17.0, abs=1.0)
    assert report["arms"]["service"]["replied"] == 0


def test_median_hours_to_reply(tmp_path: Path) -> None:
    d = Dataset()
    c = d.campaign("c1")
    for i, hours in enumerate((2.5, 5.5, 7.5, 50.5, 1.5)):
        m = d.mail(c, f"a{i}@uni.example", "liaison", liaison="aino")
        d.respond(m, "reply", timedelta(hours=hours))
    for i, hours in enumerate((10.5, 20.5)):
        m = d.mail(c, f"b{i}@uni.example", "liaison", liaison="bo")
        d.respond(m, "reply", timedelta(hours=hours))
    m = d.mail(c, "s0@uni.example", "service", liaison="aino")
    d.respond(m, "reply", timedelta(hours=100.5))
    report = build(tmp_path, d)
    # one reply per hourly bucket, in the middle of it: the interpolation is exact
    assert report["arms"]["liaison"]["median_hours_to_reply"] == 7.5
    assert report["arms"]["service"]["median_hours_to_reply"] == 100.5
    assert report["total"]["median_hours_to_reply"] == 9.0  # (7.5 + 10.5) / 2 of all eight
    liaisons = {e["id"]: e for e in report["liaisons"]}
    assert liaisons["aino"]["median_hours_to_reply"] == 5.5  # personal mail only
    assert liaisons["bo"]["median_hours_to_reply"] == 15.5
    assert liaisons["aino"]["sent"] == 5  # the service mail to aino's segment is not aino's
    by_arm = {(e["id"], e["arm"]): e for e in report["liaisons_by_arm"]}
    assert by_arm[("aino", "service")]["sent"] == 1


def test_randomised_only_when_every_compared_row_is_from_a_split(tmp_path: Path) -> None:
    d = Dataset()
    split = d.campaign("split", "split", "exp")
    for i in range(10):
        d.mail(split, f"r{i}@uni.example", "liaison" if i % 2 else "service")
    report = build(tmp_path, d, "a.db")
    assert report["difference"]["randomised"] is True
    assert report["difference"]["label"] == "randomised comparison"
    assert not any("observational" in n for n in report["notes"])
    news = d.campaign("news", "liaison")
    d.mail(news, "r0@uni.example", "liaison")
    report = build(tmp_path, d, "b.db")
    assert report["difference"]["randomised"] is False
    assert "observational" in report["difference"]["label"]
    assert any("observational" in n for n in report["notes"])
    # an unknown campaign (no campaigns row) is not randomised either
    d2 = Dataset()
    d2.mail("ghost", "x@uni.example", "liaison")
    d2.mail("ghost", "y@uni.example", "service")
    assert build(tmp_path, d2, "c.db")["difference"]["randomised"] is False


def test_cmh_with_two_liaisons_and_not_with_one(tmp_path: Path) -> None:
    d = Dataset()
    c = d.campaign("c1")
    n = 0
    for liaison, (r_p, r_s) in {"aino": (12, 6), "bo": (9, 7)}.items():
        for arm, replies in (("liaison", r_p), ("service", r_s)):
            for i in range(40):
                m = d.mail(c, f"{liaison}{arm}{i}@uni.example", arm, liaison=liaison)
                n += 1
                if i < replies:
                    d.respond(m, "reply", 3 * H)
    report = build(tmp_path, d, "two.db")
    strat = report["difference"]["stratified"]
    assert strat["strata"] == 2
    check_cmh(strat, outcomes(d))
    from rich.console import Console

    buf = io.StringIO()
    print_table(report, Console(file=buf, width=200))
    assert "CMH across liaisons" in buf.getvalue()
    assert "Cochran–Mantel–Haenszel across 2 liaisons" in to_html(report)
    one = Dataset()
    c = one.campaign("c1")
    for i in range(20):
        m = one.mail(c, f"r{i}@uni.example", "liaison" if i % 2 else "service", liaison="aino")
        if i % 3 == 0:
            one.respond(m, "reply", H)
    report = build(tmp_path, one, "one.db")
    assert report["difference"]["stratified"]["strata"] == 1
    buf = io.StringIO()
    print_table(report, Console(file=buf, width=200))
    assert "CMH" not in buf.getvalue()
    all_formats(report)


def test_power_says_how_many_are_needed(tmp_path: Path) -> None:
    d = Dataset()
    c = d.campaign("c1")
    for i in range(60):
        m = d.mail(c, f"r{i}@uni.example", "liaison" if i % 2 else "service")
        if i % 10 == 0:
            d.respond(m, "reply", H)
    report = build(tmp_path, d)
    power = report["difference"]["power"]
    service_rate = report["arms"]["service"]["rate"]
    assert power["needed_per_arm"] == sample_size_per_arm(service_rate, 0.05)
    assert power["have_per_arm"] == 30 and power["enough"] is False
    assert any(f"about {power['needed_per_arm']} delivered per arm" in n for n in report["notes"])
    # --lift changes the target
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        wide = report_of(store, lift=0.30)["difference"]["power"]
    finally:
        store.close()
    assert wide["lift"] == 0.30 and wide["needed_per_arm"] < power["needed_per_arm"]


def test_enough_data_needs_no_note(tmp_path: Path) -> None:
    d = Dataset()
    c = d.campaign("c1")
    for i in range(2400):  # 20% reply in each arm: 0.20 -> 0.25 needs 1094 per arm
        m = d.mail(c, f"r{i}@uni.example", "liaison" if i % 2 else "service")
        if i % 5 == 0:
            d.respond(m, "reply", H)
    report = build(tmp_path, d)
    assert report["difference"]["power"]["enough"] is True
    assert not any("too few" in n for n in report["notes"])


def test_familiarity_curve_buckets_by_prior_contacts(tmp_path: Path) -> None:
    d = Dataset()
    c = d.campaign("c1")
    spec = {0: (10, 1), 1: (8, 2), 2: (6, 3), 4: (4, 2), 5: (2, 1), 9: (3, 3)}
    for prior, (sent, replied) in spec.items():
        for i in range(sent):
            m = d.mail(c, f"p{prior}-{i}@uni.example", "liaison", prior=prior)
            if i < replied:
                d.respond(m, "reply", H)
    m = d.mail(c, "hard@uni.example", "liaison", prior=1)
    d.respond(m, "bounce_hard", H)
    d.mail(c, "svc@uni.example", "service", prior=0)  # service mail is not on the curve
    report = build(tmp_path, d)
    curve = {e["earlier_contacts"]: e for e in report["familiarity"]}
    assert sorted(curve) == [0, 1, 2, 4, 5]  # 3 has nobody; 9 is in the capped 5+ bucket
    assert (curve[0]["sent"], curve[0]["delivered"], curve[0]["replied"]) == (10, 10, 1)
    assert (curve[1]["sent"], curve[1]["delivered"], curve[1]["replied"]) == (9, 8, 2)
    assert (curve[5]["sent"], curve[5]["replied"], curve[5]["capped"]) == (5, 4, True)
    assert curve[2]["rate"] == 0.5 and curve[4]["capped"] is False


def test_inbound_contacts_per_researcher_year(tmp_path: Path) -> None:
    d = Dataset()
    c = d.campaign("c1")
    d.mail(c, "a@uni.example", "liaison")
    d.mail(c, "b@uni.example", "service")
    d.responses.append(Resp("a@uni.example", None, "inbound", T0 + timedelta(days=3)))
    d.responses.append(Resp("a@uni.example", None, "inbound", T0 - timedelta(days=3)))  # before
    d.contacts.append(Contact("a@uni.example", "inbound", T0 + timedelta(days=40), "aino"))
    d.contacts.append(Contact("b@uni.example", "meeting", T0 + timedelta(days=40), "aino"))
    report = build(tmp_path, d)
    inbound = {e["arm"]: e for e in report["inbound"]}
    assert inbound["liaison"]["inbound"] == 2 and inbound["liaison"]["researchers"] == 1
    assert inbound["service"]["inbound"] == 0
    years = inbound["liaison"]["years"]
    assert inbound["liaison"]["per_researcher_year"] == pytest.approx(2 / years, rel=1e-3)


# -- edge cases: defined output, never NaN or a crash ------------------------------------


def _edge(name: str) -> Dataset:
    d = Dataset()
    if name == "empty store":
        return d
    c = d.campaign("c1")
    if name == "no replies":
        for i in range(6):
            d.mail(c, f"r{i}@uni.example", "liaison" if i % 2 else "service")
    elif name == "nothing delivered":
        for i in range(6):
            m = d.mail(c, f"r{i}@uni.example", "liaison" if i % 2 else "service")
            d.respond(m, "bounce_hard", H)
            d.respond(m, "reply", 2 * H)
    elif name == "empty arm":
        for i in range(6):
            m = d.mail(c, f"r{i}@uni.example", "liaison")
            if i < 2:
                d.respond(m, "reply", H)
    elif name == "one liaison":
        for i in range(6):
            m = d.mail(c, f"r{i}@uni.example", "liaison" if i % 2 else "service", liaison="bo")
            d.respond(m, "reply", H)
    elif name == "everybody replied":
        for i in range(6):
            m = d.mail(c, f"r{i}@uni.example", "liaison" if i % 2 else "service")
            d.respond(m, "reply", H)
    elif name == "only unsent rows":
        d.mail(c, "r0@uni.example", "liaison", status="planned", sent_at=None)
    elif name == "odd names":
        m = d.mail(
            c, "r0@uni.example", "liaison", liaison="[bold]$x$", faculty="<b>&", department=None
        )
        d.respond(m, "reply", H)
        d.mail(c, "r1@uni.example", "service", liaison=None, faculty=None)
    return d


EDGES = [
    "empty store",
    "no replies",
    "nothing delivered",
    "empty arm",
    "one liaison",
    "everybody replied",
    "only unsent rows",
    "odd names",
]


@pytest.mark.parametrize("name", EDGES)
def test_edge_cases_give_defined_output(tmp_path: Path, name: str) -> None:
    data = _edge(name)
    report = build(tmp_path, data)
    all_formats(report)
    check_against_recount(report, data, outcomes(data))
    diff = report["difference"]
    assert -1.0 <= diff["ci95"][0] <= diff["estimate"] <= diff["ci95"][1] <= 1.0
    assert 0.0 <= diff["p_value"] <= 1.0
    for arm in report["arms"].values():
        assert 0.0 <= arm["ci95"][0] <= arm["rate"] <= arm["ci95"][1] <= 1.0
    if name in ("empty store", "only unsent rows"):
        assert report["total"]["sent"] == 0
        assert any("nothing has been sent" in n for n in report["notes"])
    if name in ("empty store", "nothing delivered", "empty arm", "only unsent rows"):
        assert diff["comparable"] is False
        assert diff["estimate"] == 0.0 and diff["ci95"] == [-1.0, 1.0] and diff["p_value"] == 1.0
        assert any("no comparison is possible" in n for n in report["notes"])
    if name == "nothing delivered":
        assert report["total"]["delivered"] == 0 and report["total"]["replied"] == 0
        assert report["arms"]["liaison"]["ci95"] == [0.0, 1.0]
    if name == "empty arm":
        assert report["arms"]["service"]["sent"] == 0
        assert report["arms"]["liaison"]["rate"] == round(2 / 6, 6)
        assert report["difference"]["power"]["needed_per_arm"] is not None
        assert any("delivered per arm are needed" in n for n in report["notes"])
    if name == "everybody replied":
        assert report["arms"]["liaison"]["ci95"][1] == 1.0
        assert report["difference"]["relative_lift"] == 0.0


# -- the JSON contract ---------------------------------------------------------------------


def test_json_contract_keys(random_report: dict[str, Any]) -> None:
    r = json.loads(to_json(random_report))
    assert {"arms", "difference", "liaisons", "campaigns"} <= set(r)
    figure = {"sent", "delivered", "replied", "rate", "ci95"}
    assert set(r["arms"]) == {"liaison", "service"}
    for arm in r["arms"].values():
        assert figure <= set(arm)
        assert isinstance(arm["sent"], int) and isinstance(arm["rate"], float)
        assert len(arm["ci95"]) == 2
    d = r["difference"]
    assert {"estimate", "ci95", "p_value", "test", "randomised"} <= set(d)
    assert isinstance(d["randomised"], bool) and d["test"] == "fisher"
    assert r["liaisons"] and all({"id", *figure} <= set(e) for e in r["liaisons"])
    assert r["campaigns"] and all({"id", "sent", "replied"} <= set(e) for e in r["campaigns"])


# -- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def cli_workspace(tmp_path: Path, random_data: Dataset) -> Path:
    root = copy_example(tmp_path / "ws")
    store = sqlite_store(root / "outreach.db")
    try:
        insert_dataset(store, random_data)
    finally:
        store.close()
    return root


def run(root: Path, *args: str) -> Run:
    return cli(root, "report", *args)


def test_cli_formats(cli_workspace: Path, random_report: dict[str, Any]) -> None:
    table = run(cli_workspace)
    assert table.code == 0, table.output
    for title in ("Per arm", "Per liaison", "Per campaign", "Familiarity", "observational"):
        assert title in table.output
    as_json = run(cli_workspace, "--format", "json")
    assert as_json.code == 0
    got = json.loads(as_json.stdout)
    assert strip_clock(got) == strip_clock(named(random_report, cli_workspace))
    assert {e["id"]: e.get("name") for e in got["liaisons"]}["aino"] == "Aino Virtanen"
    as_csv = run(cli_workspace, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    arms = {r["key"]: r for r in rows if r["section"] == "arms"}
    assert int(arms["liaison"]["replied"]) == random_report["arms"]["liaison"]["replied"]
    assert float(arms["service"]["ci95_high"]) == random_report["arms"]["service"]["ci95"][1]
    sections = {r["section"] for r in rows}
    assert {"arms", "liaisons", "faculties", "campaigns", "years", "difference"} <= sections
    out = cli_workspace / "r.html"
    html = run(cli_workspace, "--format", "html", "--out", str(out))
    assert html.code == 0 and out.read_text().startswith("<!DOCTYPE html>")
    text_out = cli_workspace / "r.txt"
    assert run(cli_workspace, "--out", str(text_out)).code == 0
    assert "Per arm" in text_out.read_text()


def test_cli_filters(cli_workspace: Path, random_store: Store) -> None:
    by_campaign = json.loads(
        run(cli_workspace, "--format", "json", "--campaign", "split-2026").stdout
    )
    assert strip_clock(by_campaign) == strip_clock(
        named(report_of(random_store, Filters(campaign="split-2026")), cli_workspace)
    )
    by_year = json.loads(
        run(cli_workspace, "--format", "json", "--year", "2025", "--lift", "0.1").stdout
    )
    assert by_year["filters"]["year"] == 2025
    assert by_year["difference"]["power"]["lift"] == 0.1
    assert {c["id"] for c in by_year["campaigns"]} == {"split-2025"}
    unknown = run(cli_workspace, "--campaign", "no-such-campaign")
    assert unknown.code == 2 and "no campaign" in unknown.output


def test_cli_campaign_from_a_workspace_yaml(tmp_path: Path) -> None:
    """--campaign takes a campaign file name too (the YAML's id is what the ledger keys on)."""
    root = copy_example(tmp_path / "ws")
    d = Dataset()
    c = d.campaign("familiar-faces-2027")
    d.mail(c, "a@uni.example", "liaison")
    store = sqlite_store(root / "outreach.db")
    insert_dataset(store, d)
    store.close()
    got = json.loads(
        run(root, "--format", "json", "--campaign", "campaigns/familiar-faces-2027.yaml").stdout
    )
    assert got["filters"]["campaign"] == "familiar-faces-2027" and got["total"]["sent"] == 1


def test_cli_on_an_empty_store(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "ws")
    for fmt in ("table", "csv", "json", "html"):
        result = run(root, "--format", fmt)
        assert result.code == 0, result.output
    assert json.loads(run(root, "--format", "json").stdout)["total"]["sent"] == 0


# -- PostgreSQL: the same figures ----------------------------------------------------------


@pytest.mark.postgres
def test_postgresql_gives_identical_figures(
    random_data: Dataset, random_store: Store, pg_url: str
) -> None:
    # a session time zone far from UTC: years and windows must not depend on it
    store = open_store(pg_url + "%20-ctimezone%3DPacific/Kiritimati")
    try:
        assert store.dialect == "postgresql"
        insert_dataset(store, random_data)
        for filters in (
            Filters(),
            Filters(campaign="split-2026"),
            Filters(year=2026),
            Filters(experiment="ff-2025"),
        ):
            pg = strip_clock(report_of(store, filters))
            assert pg == strip_clock(report_of(random_store, filters)), filters
        check_against_recount(report_of(store), random_data, outcomes(random_data))
    finally:
        store.close()


@pytest.mark.postgres
@pytest.mark.parametrize("name", ["empty store", "nothing delivered", "odd names"])
def test_postgresql_edge_cases(tmp_path: Path, name: str, pg_url: str) -> None:
    data = _edge(name)
    lite = build(tmp_path, data)
    store = open_store(pg_url)
    try:
        insert_dataset(store, data)
        pg = report_of(store)
    finally:
        store.close()
    assert strip_clock(pg) == strip_clock(lite)


# -- end to end: send the split campaign, answer it, ingest, report ----------------------

CAMPAIGN = "familiar-faces-2027"


@pytest.fixture(scope="module")
def sent_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_example_sent(tmp_path_factory.mktemp("e2e") / "ws", CAMPAIGN)


def test_end_to_end_send_reply_ingest_report(sent_workspace: Path, tmp_path: Path) -> None:
    from track_helpers import dsn, query, read_sent, reply, sieve_vacation, write_maildir

    root = tmp_path / "ws"
    shutil.copytree(sent_workspace, root)
    sent = read_sent(root, CAMPAIGN)
    arm_of = dict(query(root, "select email, arm from ledger where campaign_id = ?", CAMPAIGN))
    personal = [s for s in sent if arm_of[s.email] == "liaison"]
    generic = [s for s in sent if arm_of[s.email] == "service"]
    assert len(personal) > 40 and len(generic) > 40
    messages = []
    # personal arm: 12 replies (one person twice), 3 vacations, 2 hard bounces, 1 late reply
    for s in personal[:12]:
        messages.append(reply(s))
    messages.append(reply(personal[0], "And one more thing.", date=personal[0].sent_at + 5 * H))
    messages += [sieve_vacation(s) for s in personal[12:15]]
    messages += [dsn(s, "5.1.1") for s in personal[15:17]]
    messages.append(
        reply(personal[17], "Sorry, late.", date=personal[17].sent_at + timedelta(days=45))
    )
    # service arm: 5 replies, 2 vacations, 1 hard bounce
    messages += [reply(s) for s in generic[:5]]
    messages += [sieve_vacation(s) for s in generic[5:7]]
    messages.append(dsn(generic[7], "5.1.1"))
    maildir = write_maildir(tmp_path / "inbox", messages)
    ingest = cli(root, "track", "ingest", f"maildir:{maildir}")
    assert ingest.code == 0, str(ingest)
    late = query(
        root,
        "select count(*) from responses where email = ? and kind = 'reply'",
        personal[17].email,
    )
    assert late == [(1,)]  # ingested as a reply, yet outside the window
    result = cli(root, "report", "--format", "json")
    assert result.code == 0, str(result)
    report = json.loads(result.stdout)
    lia, svc = report["arms"]["liaison"], report["arms"]["service"]
    assert (lia["sent"], lia["bounce_hard"], lia["delivered"]) == (
        len(personal),
        2,
        len(personal) - 2,
    )
    assert lia["replied"] == 12 and lia["auto_reply"] == 3
    assert (svc["sent"], svc["delivered"], svc["replied"], svc["auto_reply"]) == (
        len(generic),
        len(generic) - 1,
        5,
        2,
    )
    assert lia["rate"] == round(12 / (len(personal) - 2), 6)
    assert lia["median_hours_to_reply"] == pytest.approx(3.0, abs=1.0)
    d = report["difference"]
    assert d["randomised"] is True and d["label"] == "randomised comparison"
    assert d["stratified"]["strata"] >= 2
    assert report["campaigns"] == [
        {**report["campaigns"][0], "id": CAMPAIGN, "sent": len(sent), "replied": 17}
    ]
    assert sum(e["sent"] for e in report["liaisons"]) == len(personal)
    # the other formats over the same store
    for fmt in ("table", "csv"):
        assert cli(root, "report", "--format", fmt).code == 0
