"""Bounces from every mail system: the labelled collection in tests/corpus/track_bounces
(GNU Mailman's bounce samples and a few written here) is recognised with the failed
address, and what is not a bounce is not taken for one.

`pytest -s` prints the recognition rate and every miss.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pytest

from outreach.track.bounces import MAX_SCAN
from outreach.track.classify import BOUNCE_HARD, BOUNCE_SOFT, REPLY, Context, classify
from outreach.track.parse import parse

CORPUS = Path(__file__).resolve().parent / "corpus" / "track_bounces"
TARGET = 0.95
BOUNCES = (BOUNCE_HARD, BOUNCE_SOFT)


@dataclass(frozen=True)
class Label:
    file: str
    kind: str
    failed: tuple[str, ...]


def labels() -> list[Label]:
    with (CORPUS / "labels.csv").open(encoding="utf-8", newline="") as f:
        return [Label(r["file"], r["kind"], tuple(r["failed"].split())) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def results() -> dict[str, tuple[str, str | None, str]]:
    ctx = Context(domain="uni.example")
    out = {}
    for lab in labels():
        d = classify(parse((CORPUS / lab.file).read_bytes()), ctx)
        out[lab.file] = (d.kind, d.recipient, d.reason)
    return out


def test_labels_and_files_agree() -> None:
    on_disk = {p.name for p in CORPUS.glob("*.eml")}
    assert {lab.file for lab in labels()} == on_disk
    assert len(on_disk) >= 100


def test_bounces_recognised_with_the_failed_address(
    results: dict[str, tuple[str, str | None, str]],
) -> None:
    bounces = [lab for lab in labels() if lab.kind in BOUNCES]
    with_address = [lab for lab in bounces if lab.failed]
    found = [lab for lab in with_address if results[lab.file][:2] in _wanted(lab)]
    as_bounce = [lab for lab in bounces if results[lab.file][0] in BOUNCES]
    severity = [lab for lab in bounces if results[lab.file][0] == lab.kind]
    rate = len(found) / len(with_address)
    misses = [
        f"  {lab.file}: want {lab.kind} {' '.join(lab.failed) or '-'}, got "
        f"{results[lab.file][0]} {results[lab.file][1] or '-'} ({results[lab.file][2]})"
        for lab in bounces
        if lab not in found and (lab.failed or lab not in as_bounce)
    ]
    summary = (
        f"bounce corpus: {len(found)}/{len(with_address)} = {rate:.1%} recognised with the "
        f"failed address; {len(as_bounce)}/{len(bounces)} recognised as bounces; "
        f"hard/soft right for {len(severity)}/{len(bounces)}"
    )
    print("\n" + summary + ("\n" + "\n".join(misses) if misses else ""))
    assert rate >= TARGET, summary + "\n" + "\n".join(misses)
    assert len(severity) / len(bounces) >= TARGET, summary


def _wanted(lab: Label) -> set[tuple[str, str | None]]:
    kinds = BOUNCES  # recognised as a bounce; hard or soft is counted on its own
    return {(k, a) for k in kinds for a in lab.failed}


def test_what_is_not_a_bounce_is_not_taken_for_one(
    results: dict[str, tuple[str, str | None, str]],
) -> None:
    others = [lab for lab in labels() if lab.kind not in BOUNCES]
    assert others
    for lab in others:
        assert results[lab.file][0] == lab.kind, (lab.file, results[lab.file])


def _reply_quoting_a_bounce() -> bytes:
    return (
        b"From: Tom Baker <tom.baker@uni.example>\nTo: Emily <emily.clarke@uni.example>\n"
        b"Subject: Re: Undelivered Mail Returned to Sender\n"
        b"Date: Wed, 11 Mar 2026 08:00:00 +0200\nMessage-ID: <q1@example.org>\n"
        b"In-Reply-To: <4erikvv4e7yse3ue6wbvts26xj.familiar-faces-2027@uni.example>\n\n"
        b"Odd, my colleague's address is right. What did the server say?\n\n"
        b"> The following addresses had permanent fatal errors\n"
        b"> <colleague@uni.example>\n> 550 5.1.1 User unknown\n"
    )


def test_a_person_quoting_a_bounce_is_not_read_by_the_bounce_detectors() -> None:
    p = parse(_reply_quoting_a_bounce())
    assert p.failed is None
    assert classify(p, Context(domain="uni.example")).kind == REPLY


def test_a_large_bounce_is_not_scanned_line_by_line() -> None:
    """Beyond MAX_SCAN the detectors are not asked (they read every line once per
    pattern): a large bounce is still told by its sender and wording."""
    small = (CORPUS / "mailman_simple_01.eml").read_bytes()
    assert parse(small).failed is not None
    big = small + b"\n" + (b"y" * 76 + b"\n") * (MAX_SCAN // 77 + 10)
    p = parse(big)
    assert p.failed is None
    assert classify(p, Context(domain="uni.example")).kind == BOUNCE_HARD


def test_the_returned_message_names_the_failed_address() -> None:
    """A report that names no address in its text (Domino, Exchange 2003, MDaemon here):
    we send each message to one person, so the To of the returned message is the one."""
    for name, address in (
        ("own_lotus_domino_not_listed.eml", "anna.lind@partner-hospital.example"),
        ("own_mdaemon_permanent_failure.eml", "p.keskinen@oldlab.example"),
    ):
        d = classify(parse((CORPUS / name).read_bytes()), Context(domain="uni.example"))
        assert (d.kind, d.recipient) == (BOUNCE_HARD, address), (name, d)
        assert d.referenced is not None and d.referenced.endswith("@uni.example>")
