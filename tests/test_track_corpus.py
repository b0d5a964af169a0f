"""Accuracy of the tracker on the labelled corpus (tests/corpus/track/).

Every file is classified through the library and once through
`outreach track classify --json` (checking the JSON contract). A per-kind precision/recall
table is printed (`pytest -s` shows it; it is also part of every failure message).

The blind held-out set (tests/corpus/track_holdout/, written by someone who has not seen the
classifier) is only measured, never tuned against: its table is printed and the one hard
rule is asserted, no human reply counted as a machine (auto_reply, bounce) or an unsubscribe.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from foundation_helpers import cli, copy_example, run_cli

from outreach.track.classify import KINDS, UNPARSEABLE, Context, classify
from outreach.track.ingest import make_context
from outreach.track.parse import Unparseable, parse
from outreach.workspace.loader import load_workspace

CORPUS = Path(__file__).resolve().parent / "corpus" / "track"
HOLDOUT = Path(__file__).resolve().parent / "corpus" / "track_holdout"
CONTRACT_KEYS = {"file", "kind", "matched", "reason"}
MACHINE_OR_UNSUB = {"auto_reply", "bounce_hard", "bounce_soft", "unsubscribe"}


@dataclass(frozen=True)
class Label:
    file: str
    kind: str
    matched: str


@dataclass(frozen=True)
class Result:
    kind: str
    matched: str
    reason: str


def read_labels(folder: Path) -> list[Label]:
    with (folder / "labels.csv").open(encoding="utf-8", newline="") as f:
        return [
            Label(r["file"].strip(), r["kind"].strip(), (r.get("matched") or "").strip().lower())
            for r in csv.DictReader(f)
        ]


def classify_file(path: Path, ctx: Context) -> Result:
    try:
        parsed = parse(path.read_bytes())
    except Unparseable as exc:
        return Result(UNPARSEABLE, "", str(exc))
    d = classify(parsed, ctx)
    return Result(d.kind, (d.referenced or "").lower(), d.reason)


def score_table(title: str, pairs: list[tuple[str, str]]) -> tuple[str, dict[str, tuple]]:
    """(label, predicted) pairs → a printable precision/recall table and the figures."""
    kinds = [k for k in KINDS if any(k in p for p in pairs)]
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for truth, got in pairs:
        if truth == got:
            tp[truth] += 1
        else:
            fp[got] += 1
            fn[truth] += 1
    lines = [
        title,
        f"{'kind':<13}{'n':>4}{'tp':>5}{'fp':>5}{'fn':>5}{'precision':>11}{'recall':>8}",
    ]
    figures = {}
    for k in kinds:
        n = tp[k] + fn[k]
        prec = tp[k] / (tp[k] + fp[k]) if tp[k] + fp[k] else float("nan")
        rec = tp[k] / n if n else float("nan")
        figures[k] = (n, tp[k], fp[k], fn[k], prec, rec)
        lines.append(f"{k:<13}{n:>4}{tp[k]:>5}{fp[k]:>5}{fn[k]:>5}{prec:>11.3f}{rec:>8.3f}")
    correct = sum(tp.values())
    lines.append(f"accuracy {correct}/{len(pairs)} = {correct / max(1, len(pairs)):.3f}")
    return "\n".join(lines), figures


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Context:
    root = copy_example(tmp_path_factory.mktemp("corpus-ws"))
    return make_context(load_workspace(explicit=root, only_campaigns=[]))


@pytest.fixture(scope="module")
def library_results(context: Context) -> dict[str, Result]:
    return {lab.file: classify_file(CORPUS / lab.file, context) for lab in read_labels(CORPUS)}


def test_corpus_files_and_labels_agree() -> None:
    labels = read_labels(CORPUS)
    on_disk = {p.name for p in CORPUS.glob("*.eml")}
    assert {lab.file for lab in labels} == on_disk
    assert all(lab.kind in KINDS for lab in labels)


def test_corpus_precision_recall(library_results: dict[str, Result]) -> None:
    labels = read_labels(CORPUS)
    pairs = [(lab.kind, library_results[lab.file].kind) for lab in labels]
    table, _ = score_table("track corpus (training): per-kind precision / recall", pairs)
    print("\n" + table)
    wrong = [
        f"{lab.file}: labelled {lab.kind} {lab.matched or '-'}, got "
        f"{library_results[lab.file].kind} {library_results[lab.file].matched or '-'} "
        f"({library_results[lab.file].reason})"
        for lab in labels
        if (library_results[lab.file].kind, library_results[lab.file].matched)
        != (lab.kind, lab.matched)
    ]
    human_lost = [w for w in wrong if w.split(": labelled ", 1)[1].startswith("reply ")]
    assert not human_lost, f"a human reply was classified as something else: {human_lost}\n{table}"
    assert not wrong, "\n".join(wrong) + "\n" + table


def test_corpus_through_cli_json_contract(
    tmp_path: Path, library_results: dict[str, Result]
) -> None:
    root = copy_example(tmp_path / "ws")
    files = sorted(str(p) for p in CORPUS.glob("*.eml"))
    run = cli(root, "track", "classify", "--json", *files)
    assert run.code == 0, str(run)
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    assert len(lines) == len(files)
    seen = set()
    for line in lines:
        obj = json.loads(line)
        assert set(obj) >= CONTRACT_KEYS, obj
        assert obj["kind"] in KINDS
        assert obj["matched"] is None or (
            obj["matched"].startswith("<") and obj["matched"].endswith(">")
        )
        assert isinstance(obj["reason"], str) and obj["reason"]
        name = Path(obj["file"]).name
        seen.add(name)
        lib = library_results[name]
        assert (obj["kind"], (obj["matched"] or "").lower()) == (lib.kind, lib.matched), name
    assert seen == {Path(f).name for f in files}
    # nothing is stored by `track classify`
    assert not (root / "outreach.db").exists()


def test_classify_outside_a_workspace_still_knows_our_message_ids(tmp_path: Path) -> None:
    """No workspace (no people, no ledger): replies are still told by our Message-ID format,
    machines by their headers; only `inbound` needs the list of researchers."""
    labels = read_labels(CORPUS)
    files = [str(CORPUS / lab.file) for lab in labels]
    run = run_cli(["track", "classify", "--json", *files], cwd=tmp_path)
    assert run.code == 0 and "Traceback" not in run.output, str(run)
    got = {Path(o["file"]).name: o for o in map(json.loads, run.stdout.splitlines())}
    for lab in labels:
        o = got[lab.file]
        if lab.kind in ("reply", "auto_reply", "bounce_hard", "bounce_soft"):
            assert (o["kind"], (o["matched"] or "").lower()) == (lab.kind, lab.matched) or (
                lab.kind == "reply" and not lab.matched and o["kind"] in ("reply", "unrelated")
            ), (lab.file, o)


@pytest.mark.skipif(
    not (HOLDOUT / "labels.csv").exists(), reason="no held-out corpus (tests/corpus/track_holdout)"
)
def test_holdout_measured_not_tuned(context: Context) -> None:
    labels = [lab for lab in read_labels(HOLDOUT) if (HOLDOUT / lab.file).is_file()]
    results = {lab.file: classify_file(HOLDOUT / lab.file, context) for lab in labels}
    pairs = [(lab.kind, results[lab.file].kind) for lab in labels]
    table, _ = score_table("track corpus (held-out): per-kind precision / recall", pairs)
    print("\n" + table)
    for lab in labels:
        r = results[lab.file]
        if (r.kind, r.matched) != (lab.kind, lab.matched):
            print(f"  held-out miss: {lab.file}: {lab.kind} -> {r.kind} ({r.reason})")
    lost = [
        f"{lab.file} -> {results[lab.file].kind} ({results[lab.file].reason})"
        for lab in labels
        if lab.kind == "reply" and results[lab.file].kind in MACHINE_OR_UNSUB
    ]
    assert not lost, "human replies counted as machines or unsubscribes:\n" + "\n".join(lost)
