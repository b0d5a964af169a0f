"""The report's opening sentences (outreach/report/summary.py) and liaison names.

The sentence builder over its edge cases (nothing delivered, one arm empty, no replies,
tiny groups, could be chance, unlikely to be chance, weak replies); a property: every number
a sentence shows is one the comparison's table row or its statistics show; and through the
CLI: the randomised experiment is the headline, observational comparisons come after and
say so, and liaisons are named in the table, the HTML and the JSON.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
from foundation_helpers import cli, copy_example
from hypothesis import given, settings
from hypothesis import strategies as st
from report_helpers import (
    Dataset,
    experiment_and_newsletters,
    insert_dataset,
    random_dataset,
    sqlite_store,
)

from outreach.report.formats import _cell, _rows
from outreach.report.stats import fisher_p, rate, sample_size_per_arm, wilson
from outreach.report.summary import (
    OBSERVATIONAL,
    OBSERVATIONAL_LABEL,
    RANDOMISED,
    TOO_FEW,
    compare,
    nothing_sent,
)

pytestmark = pytest.mark.timeout(120)


def figures(replied: int, delivered: int, weak: int = 0, bounced: int = 0) -> dict[str, Any]:
    low, high = wilson(replied, delivered)
    return {
        "sent": delivered + bounced,
        "delivered": delivered,
        "replied": replied,
        "replied_weak": weak,
        "bounce_hard": bounced,
        "bounce_soft": 0,
        "auto_reply": 0,
        "unsubscribe": 0,
        "rate": round(rate(replied, delivered), 6),
        "ci95": [round(low, 6), round(high, 6)],
        "median_hours_to_reply": None,
    }


def comparison(
    x1: int,
    n1: int,
    x2: int,
    n2: int,
    kind: str = RANDOMISED,
    weak: tuple[int, int] = (0, 0),
    lift: float = 0.05,
) -> dict[str, Any]:
    arms = {"liaison": figures(x1, n1, weak[0]), "service": figures(x2, n2, weak[1])}
    return compare(kind, "ff-2027" if kind == RANDOMISED else "", ["c"], arms, lift)


def text(c: dict[str, Any]) -> str:
    return " ".join(c["sentences"])


# -- the edge cases ----------------------------------------------------------------------


def test_the_example_of_the_issue() -> None:
    c = comparison(41, 290, 17, 285)
    first, chance, power = c["sentences"]
    assert first == (
        "In the randomised experiment ff-2027, researchers who got the message from their own "
        "liaison answered 14.1% of the time (41 of 290); from the service address, 6.0% "
        "(17 of 285)."
    )
    assert c["verdict"] == "unlikely-chance" and c["p_value"] < 0.05
    assert "seldom arise by chance" in chance and "chosen at random" in chance
    assert f"p = {fisher_p(41, 290, 17, 285):.3g}" in chance
    needed = sample_size_per_arm(17 / 285, 41 / 290 - 17 / 285)
    assert c["power"]["needed_per_arm"] == needed and c["power"]["basis"] == "observed"
    assert power == (
        f"To detect a difference of this size with 80% power you would need about {needed} "
        "researchers per group; with 285 in the smaller group, this comparison has enough."
    )


def test_observational_never_credits_the_sender() -> None:
    c = comparison(30, 100, 10, 100, kind=OBSERVATIONAL)
    assert c["label"] == OBSERVATIONAL_LABEL and c["randomised"] is False
    assert c["sentences"][0].startswith("In the campaigns that were not randomised, ")
    assert "not chosen at random" in text(c) and "put down to the sender" not in text(c)


def test_nothing_delivered() -> None:
    c = comparison(0, 0, 0, 0)
    assert c["verdict"] == "nothing-delivered"
    assert c["sentences"][0].startswith("Nothing has been delivered in the randomised experiment")
    assert "chance" not in text(c) and "%" not in c["sentences"][0]
    assert "sender: split" in c["sentences"][1] and len(c["sentences"]) == 2
    assert c["power"]["basis"] == "lift" and c["power"]["enough"] is False


@pytest.mark.parametrize("empty", ["liaison", "service"])
def test_one_arm_empty(empty: str) -> None:
    c = comparison(0, 0, 3, 40) if empty == "liaison" else comparison(5, 50, 0, 0)
    assert c["verdict"] == "one-arm-empty"
    first = c["sentences"][0]
    if empty == "liaison":
        assert "from the service address answered 7.5% of the time (3 of 40)" in first
        assert "nothing from their own liaison was delivered" in first
    else:
        assert "from their own liaison answered 10.0% of the time (5 of 50)" in first
        assert "nothing from the service address was delivered" in first
    assert "p =" not in text(c) and "chance" not in text(c)


def test_no_replies_and_the_weak_ones_said_apart() -> None:
    c = comparison(0, 100, 0, 120)
    assert c["verdict"] == "no-replies"
    assert "no one has answered yet: none of the 100 researchers" in c["sentences"][0]
    assert "none of the 120 who got it from the service address" in c["sentences"][0]
    assert "no difference to judge" in text(c)
    weak = comparison(0, 100, 0, 120, weak=(2, 1))
    assert "no one has verifiably answered yet" in weak["sentences"][0]
    assert weak["sentences"][1] == (
        "3 more researchers (liaison mail 2, service mail 1) answered in a way matched only by "
        "their address, which cannot be verified; those answers are not counted."
    )


def test_weak_replies_are_never_in_the_rates() -> None:
    c = comparison(10, 100, 5, 100, weak=(7, 0))
    assert "10.0% of the time (10 of 100)" in c["sentences"][0]
    assert "7 more researchers (liaison mail 7, service mail 0)" in c["sentences"][1]
    one = comparison(10, 100, 5, 100, weak=(0, 1))
    assert "1 more researcher (" in text(one) and "that answer is not counted" in text(one)


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2"), [(3, 5, 0, 5), (5, 5, 0, 5), (4, 20, 1, 20), (1, 9, 0, 400)]
)
def test_tiny_groups_are_too_few_to_tell(x1: int, n1: int, x2: int, n2: int) -> None:
    c = comparison(x1, n1, x2, n2)
    assert c["verdict"] == "too-few"
    assert "too few to tell" in text(c)
    assert "seldom" not in text(c) and "has enough" not in text(c)
    assert c["power"]["needed_per_arm"] >= TOO_FEW  # never a "2 per group" from the formula


def test_could_be_chance_and_no_difference() -> None:
    c = comparison(21, 100, 11, 100)
    assert c["verdict"] == "could-be-chance" and c["p_value"] >= 0.05
    assert "could well be chance" in text(c) and "includes no difference at all" in text(c)
    assert "the smaller group here has 100" in text(c)
    same = comparison(150, 1000, 150, 1000)
    assert "Both groups answered about equally often (p = 1)" in text(same)
    assert same["power"]["basis"] == "lift"  # no difference observed: the --lift target
    assert "a difference of 5 percentage points" in text(same)


def test_borderline_when_the_test_and_the_interval_disagree() -> None:
    found = None
    for x1 in range(10, 40):  # search a small grid for a case where they disagree
        c = comparison(x1, 120, 10, 120)
        if c["verdict"] == "borderline":
            found = c
            break
    assert found is not None
    low, high = found["ci95"]
    assert (found["p_value"] < 0.05) != (low > 0 or high < 0)
    assert "at the edge of what chance alone produces" in text(found)


def test_nothing_sent_sentence() -> None:
    assert nothing_sent() == [
        "Nothing has been sent in this selection yet, so there are no answers to count."
    ]


# -- a property: the sentences' numbers are the table's ---------------------------------

NUMBER = re.compile(r"[+-]?\d+(?:,\d{3})*(?:\.\d+)?%?")


def shown_numbers(c: dict[str, Any]) -> set[str]:
    """Every number the comparison's table rows and statistics show, as shown."""
    rows = _rows({"comparisons": [c]}, "comparisons")
    out = {"80%", "95%", "5", "1"}
    for row in rows:
        for column in ("delivered", "replied", "replied_weak", "rate"):
            out.add(_cell(row, column))
        out.update(f"{row[k]:,}" for k in ("delivered", "replied", "replied_weak"))
    weak = sum(row["replied_weak"] for row in rows)
    out.add(f"{weak:,}")
    for x in (c["estimate"], *c["ci95"]):
        out.add(f"{x * 100:+.1f}")
    out.add(f"{c['p_value']:.3g}")
    out.add("0.001")
    power = c["power"]
    out.add(f"{power['have_per_arm']:,}")
    if power["needed_per_arm"] is not None:
        out.add(f"{power['needed_per_arm']:,}")
    out.add(f"{abs(power['difference']) * 100:.3g}")
    return out


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 3000),
    st.integers(0, 3000),
    st.data(),
    st.sampled_from([RANDOMISED, OBSERVATIONAL]),
    st.sampled_from([0.02, 0.05, 0.1]),
)
def test_every_number_in_the_sentences_is_the_tables(
    n1: int, n2: int, data: st.DataObject, kind: str, lift: float
) -> None:
    x1 = data.draw(st.integers(0, n1))
    x2 = data.draw(st.integers(0, n2))
    weak = (data.draw(st.integers(0, n1 - x1)), data.draw(st.integers(0, n2 - x2)))
    c = comparison(x1, n1, x2, n2, kind, weak, lift)
    said = text(c)
    allowed = shown_numbers(c)
    for number in NUMBER.findall(said.replace("ff-2027", "")):
        assert number in allowed, (number, said)
    # each delivered arm's rate and counts, side by side as the table has them
    rows = {row["arm"]: row for row in _rows({"comparisons": [c]}, "comparisons")}
    if c["verdict"] not in ("nothing-delivered", "no-replies"):
        for row in rows.values():
            if row["delivered"]:
                assert f"{_cell(row, 'rate')}" in c["sentences"][0]
                assert f"({row['replied']:,} of {row['delivered']:,})" in c["sentences"][0]
    # the words follow the figures
    assert 2 <= len(c["sentences"]) <= 4
    if "seldom arise by chance" in said:
        assert c["p_value"] < 0.05 and min(n1, n2) >= 10
    if c["verdict"] == "too-few":
        assert "too few to tell" in said and "has enough" not in said
    if min(n1, n2) < 10 and x1 + x2 > 0 and n1 and n2:
        assert c["verdict"] == "too-few"
    if kind == OBSERVATIONAL:
        assert "put down to the sender" not in said
    if any(weak):
        assert "not counted" in said and f"liaison mail {weak[0]:,}" in said


# -- through the CLI ----------------------------------------------------------------------


def workspace(tmp_path: Path, data: Dataset) -> Path:
    root = copy_example(tmp_path / "ws")
    store = sqlite_store(root / "outreach.db")
    try:
        insert_dataset(store, data)
    finally:
        store.close()
    return root


def flat(s: str) -> str:
    return " ".join(s.split())


def test_the_experiment_is_the_headline_through_the_cli(tmp_path: Path) -> None:
    root = workspace(tmp_path, experiment_and_newsletters())
    got = cli(root, "report", "--format", "json")
    assert got.code == 0, got.output
    report = json.loads(got.stdout)
    kinds = [(c["kind"], c["id"]) for c in report["comparisons"]]
    assert kinds == [(RANDOMISED, "familiar-faces-2027"), (OBSERVATIONAL, "")]
    headline, observational = report["comparisons"]
    assert report["summary"] == headline["sentences"]
    assert headline["campaigns"] == ["ff-split"]
    assert observational["campaigns"] == ["news", "service-news"]
    assert observational["label"] == "observational — not randomised"
    # the experiment's arms: 60 each, 12 and 6 replies
    assert (headline["arms"]["liaison"]["replied"], headline["arms"]["liaison"]["delivered"]) == (
        12,
        60,
    )
    assert "answered 20.0% of the time (12 of 60)" in report["summary"][0]
    assert "from the service address, 10.0% (6 of 60)" in report["summary"][0]
    # names, not ids; an id the directory no longer has stays an id
    names = {e["id"]: e.get("name") for e in report["liaisons"]}
    assert names == {"aino": "Aino Virtanen", "lars": "Lars Ekström", "emily": "Emily Carter",
                     "gone": None}  # fmt: skip

    table = cli(root, "report")
    assert table.code == 0, table.output
    out = flat(table.output)
    assert out.startswith("Summary (randomised experiment familiar-faces-2027) ")
    for sentence in report["summary"]:
        assert sentence in out
    assert out.index("Also: observational — not randomised") > out.index(report["summary"][-1])
    for sentence in observational["sentences"]:
        assert sentence in out
    # the pooled line below mixes both kinds of mail, and says which to go by
    mixes = "It mixes randomised and observational mail: go by the randomised experiment above."
    assert mixes in out and out.index(mixes) > out.index(observational["sentences"][-1])
    per_liaison = out[out.index("Per liaison") : out.index("Per faculty")]
    for name in ("Aino Virtanen", "Lars Ekström", "Emily Carter", "gone"):
        assert name in per_liaison
    assert "│ aino " not in table.output and "│ lars " not in table.output

    page_file = tmp_path / "r.html"
    assert cli(root, "report", "--format", "html", "--out", str(page_file)).code == 0
    page = page_file.read_text(encoding="utf-8")
    summary = page.index('<section id="summary">')
    assert summary < page.index("<svg") and summary < page.index("<table>")
    lead = re.search(r'<p class="lead">(.*?)</p>', page, flags=re.S)
    assert lead is not None and lead.group(1) == " ".join(report["summary"])
    assert page.index("observational — not randomised") > page.index(report["summary"][-1])
    glossary = page.index('<section id="glossary">')
    assert glossary > page.rindex("</table>")
    assert page[glossary:].rstrip().endswith("</section>\n</body></html>".rstrip())
    for term in ("Interval (95%)", "p-value", "Randomised"):
        assert f"<dt>{term}</dt>" in page[glossary:]
    assert "Aino Virtanen / liaison" in page and "aino / liaison" not in page
    assert mixes in page


def test_only_observational_campaigns_make_an_observational_headline(tmp_path: Path) -> None:
    d = Dataset()
    news, service = d.campaign("news", "liaison"), d.campaign("svc", "service")
    for i in range(40):
        d.mail(news, f"n{i}@uni.example", "liaison", "aino")
        d.mail(service, f"s{i}@uni.example", "service", "aino")
    root = workspace(tmp_path, d)
    report = json.loads(cli(root, "report", "--format", "json").stdout)
    assert [c["kind"] for c in report["comparisons"]] == [OBSERVATIONAL]
    assert report["summary"][0].startswith("In the campaigns that were not randomised, no one")
    table = flat(cli(root, "report").output)
    assert table.startswith("Summary (observational — not randomised) ")
    assert "It mixes" not in table


def test_liaison_only_beside_an_experiment_is_no_comparison(tmp_path: Path) -> None:
    """A personal newsletter next to an experiment: no observational comparison (it has
    one arm); alone, it is the headline and says there is nothing to compare with."""
    d = Dataset()
    news = d.campaign("news", "liaison")
    for i in range(12):
        d.mail(news, f"n{i}@uni.example", "liaison", "aino")
    alone = json.loads(cli(workspace(tmp_path / "a", d), "report", "--format", "json").stdout)
    assert [c["verdict"] for c in alone["comparisons"]] == ["one-arm-empty"]
    assert "nothing from the service address was delivered" in alone["summary"][0]
    exp = d.campaign("split", "split", "ff")
    for i in range(12):
        d.mail(exp, f"x{i}@uni.example", "liaison" if i % 2 else "service", "aino")
    both = json.loads(cli(workspace(tmp_path / "b", d), "report", "--format", "json").stdout)
    assert [c["id"] for c in both["comparisons"]] == ["ff"]


def test_nothing_sent_through_the_cli(tmp_path: Path) -> None:
    root = workspace(tmp_path, Dataset())
    report = json.loads(cli(root, "report", "--format", "json").stdout)
    assert report["comparisons"] == [] and report["summary"] == nothing_sent()
    assert flat(cli(root, "report").output).startswith(
        "Summary (nothing sent) Nothing has been sent in this selection yet"
    )


@pytest.mark.parametrize("seed", [3, 11])
def test_the_html_sentences_quote_the_html_table(tmp_path: Path, seed: int) -> None:
    """End to end: each comparison's sentence quotes, for each arm, the rate, replied and
    delivered that the page's "Comparisons" table shows in that arm's row."""
    root = workspace(tmp_path, random_dataset(seed=seed, researchers=160))
    out = tmp_path / "r.html"
    assert cli(root, "report", "--format", "html", "--out", str(out)).code == 0
    page = out.read_text(encoding="utf-8")
    section = page[page.index("<h2>Comparisons") :]
    section = section[: section.index("</table>")]
    head = re.findall(r"<th>([^<]*)</th>", section[: section.index("</thead>")])[1:]
    rows = {}
    for label, cells in re.findall(r"<tr><th scope='row'>([^<]*)</th>(.*?)</tr>", section):
        rows[html.unescape(label)] = dict(
            zip(head, re.findall(r"<td>([^<]*)</td>", cells), strict=True)
        )
    paragraphs = re.findall(r'<p class="(?:lead|also)">(.*?)</p>', page, flags=re.S)
    said = [html.unescape(re.sub(r"<[^>]+>", "", p)) for p in paragraphs]
    assert len(said) == 3 and len(rows) == 6  # two experiments and the observational one
    for text_of, (label, figures) in zip(said, _pairs(rows), strict=True):
        assert label in text_of or label == "not randomised"
        liaison, service = figures
        assert (
            f"from their own liaison answered {liaison['rate']} of the time "
            f"({liaison['replied']} of {liaison['delivered']})" in text_of
        )
        assert (
            f"from the service address, {service['rate']} "
            f"({service['replied']} of {service['delivered']})" in text_of
        )


def _pairs(rows: dict[str, dict[str, str]]) -> list[tuple[str, tuple[dict[str, str], ...]]]:
    """The table's rows two by two (liaison, service), in the order of the page."""
    names = list(rows)
    out = []
    for i in range(0, len(names), 2):
        a, s = names[i], names[i + 1]
        assert a.endswith(" / liaison") and s.endswith(" / service")
        label = a.removesuffix(" / liaison").removesuffix(", randomised")
        out.append((label, (rows[a], rows[s])))
    return out
