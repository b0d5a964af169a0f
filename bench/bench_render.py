"""Benchmark: render + compose a face newsletter with co-introduction (rdm-launch-2026).

    python bench/bench_render.py                  # 10,000 recipients, baseline, 100,000 memory run
    python bench/bench_render.py --n 2000 --mem-n 0

Two pipelines produce the same messages for the same recipients, in the same run:

* outreach: ``PreparedCampaign.message`` (sandboxed Jinja with cached templates and person
  views, markdown-it, css-inline, faces encoded once per person, the MIME skeleton joined
  from cached parts), streamed: one message at a time, nothing kept.
* naive baseline: per recipient, plain ``jinja2`` (templates compiled once, to be fair) and
  markdown-it render subject, body and the same newsletter templates, css-inline inlines the
  CSS, and an ``email.message.EmailMessage`` is built from scratch (set_content text,
  add_alternative html, add_related faces) with each face re-encoded by Pillow (open,
  resize to 128x128, save JPEG), then ``as_bytes()``.

The memory run renders --mem-n recipients in a fresh child process (so its peak RSS is its
own) and reports ru_maxrss plus RSS before and after the message loop, showing that the
loop streams. Prints ``RESULT render_rate=... baseline_rate=... ratio=... peak_mb=...``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from email import policy as email_policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from functools import partial
from pathlib import Path
from typing import Any

import css_inline
import jinja2
from markdown_it import MarkdownIt
from markupsafe import Markup
from PIL import Image

from outreach.audience.recipients import Recipient
from outreach.message.i18n import translate
from outreach.message.prepared import PreparedCampaign
from outreach.message.render import photo_cid
from outreach.message.tokens import message_id, message_token
from outreach.workspace.example import init_workspace
from outreach.workspace.loader import BUILTIN_TEMPLATES, Workspace, load_workspace
from outreach.workspace.people import localised

CAMPAIGN = "rdm-launch-2026"
SECRET = "bench-secret"

FIRST = {
    "fi": ["Aino", "Eero", "Ilkka", "Jänne", "Kaisa", "Liisa", "Mikko", "Päivi", "Sanna", "Väinö"],
    "sv": ["Anders", "Åsa", "Björn", "Ebba", "Göran", "Linnéa", "Måns", "Sören", "Stina", "Ulla"],
    "en": ["Alice", "Ben", "Chloe", "David", "Emma", "George", "Hannah", "Oliver", "Ruth", "Sam"],
}
LAST = {
    "fi": ["Heikkinen", "Korhonen", "Mäkelä", "Nieminen", "Räsänen", "Virtanen", "Hämäläinen"],
    "sv": ["Ekström", "Lindqvist", "Sjöberg", "Nyström", "Åkerlund", "Holmström", "Wallin"],
    "en": ["Brown", "Carter", "Evans", "Hughes", "Taylor", "Walker", "Wright"],
}
SEGMENTS = [  # (faculty, department, unit): every liaison of the audience gets researchers
    ("Medicine", "Clinical Medicine", "Oncology"),  # helena
    ("Medicine", "Public Health", "Epidemiology"),  # aino
    ("Medicine", "Biomedicine", "Physiology"),  # aino
    ("Pharmacy", "Pharmacology", "Toxicology"),  # lars
    ("Science", "Chemistry", "Organic Chemistry"),  # helena
    ("Science", "Physics", "Materials Physics"),  # pekka
    ("Science", "Computer Science", "Machine Learning"),  # pekka
]
LANGS = ["fi", "fi", "sv", "en", "en", ""]


# ----------------------------------------------------------------------------- workspace


def build_workspace(target: Path, n: int) -> Path:
    """The example workspace (liaisons, experts, photos, campaigns) with n researchers."""
    init_workspace(target)
    with (target / "people" / "researchers.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["email", "name", "first_name", "faculty", "department", "unit", "language"])
        for i in range(n):
            lang = LANGS[i % len(LANGS)]
            names = lang or "en"
            first = FIRST[names][i % 10]
            last = LAST[names][(i // 10) % 7]
            faculty, department, unit = SEGMENTS[(i * 7 + i // 3) % len(SEGMENTS)]
            w.writerow(
                [f"r{i:06d}@uni.example", f"{first} {last}", first, faculty, department, unit, lang]
            )
    return target


def load(root: Path) -> Workspace:
    ws = load_workspace(explicit=root)
    errors = ws.errors()
    if errors:
        raise SystemExit("\n".join(str(p) for p in errors[:10]))
    return ws


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ----------------------------------------------------------------------------- outreach


def run_outreach(prepared: PreparedCampaign, recipients: list[Recipient]) -> tuple[float, int]:
    """Render and compose each recipient; keep nothing but a byte count (streaming)."""
    total = 0
    start = time.perf_counter()
    for r in recipients:
        total += len(prepared.message(r).composed.data)
    return time.perf_counter() - start, total


# ----------------------------------------------------------------------------- naive baseline


class Naive:
    """What one would write without caring: plain jinja2, EmailMessage, Pillow per message."""

    def __init__(self, ws: Workspace, prepared: PreparedCampaign) -> None:
        self.ws = ws
        self.root = ws.root
        self.campaign = prepared.campaign
        self.doc_lang = ws.settings.default_language
        self.domain = ws.settings.organisation.domain
        self.secret = prepared.secret
        self.links = prepared.composer.links
        self.md = MarkdownIt("commonmark", {"html": False})
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(BUILTIN_TEMPLATES)),
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(["html", "html.j2"], default_for_string=False),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.strings = jinja2.Environment(undefined=jinja2.StrictUndefined)
        self._compiled: dict[str, jinja2.Template] = {}  # compiled once: a fair baseline

    def template(self, source: str) -> jinja2.Template:
        tpl = self._compiled.get(source)
        if tpl is None:
            tpl = self._compiled[source] = self.strings.from_string(source)
        return tpl

    def person(self, p: Any, lang: str) -> dict[str, Any]:
        if p is None:
            return {}
        return {
            "id": p.id,
            "name": p.name,
            "first_name": p.first_name,
            "email": p.email,
            "title": localised(p.title, lang, (self.doc_lang,)) or "",
            "phone": p.phone or "",
            "photo_cid": photo_cid(p.id, self.domain) if p.photo else "",
            "is_service": p.id == "service",
            "bio": localised(getattr(p, "bio", None), lang, (self.doc_lang,)) or "",
        }

    def face(self, photo: str) -> bytes:
        with Image.open(self.root / photo) as img:
            face = img.convert("RGB").resize((128, 128), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        face.save(out, "JPEG", quality=82, optimize=True)
        return out.getvalue()

    def message(self, r: Recipient) -> bytes:
        c, d, lang = self.campaign, self.ws.directory, r.lang
        res = r.researcher
        service = self.person(d.service, lang)
        liaison = self.person(r.liaison, lang) if r.liaison else service
        sender = service if r.arm == "service" else liaison
        intro = c.introductions()[0] if c.introductions() else None
        expert_obj = d.experts[intro.expert] if intro else None
        expert = self.person(expert_obj, lang)
        token = message_token(self.secret, c.id, r.email)
        url, mailto = self.links(token, c.id)
        ctx: dict[str, Any] = {
            "researcher": {
                **res.model_dump(),
                "greeting_name": res.first_name or translate(lang, "colleague"),
            },
            "sender": sender,
            "liaison": liaison,
            "service": service,
            "expert": expert,
            "campaign": {"id": c.id, "title": localised(c.title, lang, ()) or ""},
            "organisation": {
                "name": self.ws.settings.organisation_name(lang),
                "domain": self.domain,
            },
            "lang": lang,
            "t": partial(translate, lang),
            "unsubscribe": {"url": url or "", "mailto": mailto or ""},
        }
        pick = partial(localised, lang=lang, fallback=(self.doc_lang,))
        subject = " ".join(self.template(pick(c.subject) or "").render(ctx).split())
        body = self.template(pick(c.body) or "").render(ctx)
        note = ""
        if intro and intro.note:
            note = self.template(pick(intro.note) or "").render(ctx)
        page = dict(
            ctx,
            subject=subject,
            preheader="",
            letter_html=Markup(self.md.render(body)),
            letter_text=body.strip(),
            signoff_html="",
            signoff_text="",
            items=[],
            introductions=[{"expert": expert, "note": note}] if expert_obj else [],
            reader_line=translate(lang, "reader_line", place=res.faculty),
        )
        html = css_inline.inline(self.env.get_template(f"{c.template}.html.j2").render(page))
        text = self.env.get_template(f"{c.template}.txt.j2").render(page)
        msg = EmailMessage()
        msg["From"] = Address(sender["name"], addr_spec=sender["email"])
        msg["Reply-To"] = Address(sender["name"], addr_spec=sender["email"])
        msg["To"] = Address(res.name, addr_spec=res.email)
        msg["Subject"] = subject
        msg["Date"] = formatdate(localtime=True)
        msg["Message-ID"] = message_id(token, c.id, self.domain)
        msg["List-Id"] = f"<{c.id}.{self.domain}>"
        msg["List-Unsubscribe"] = f"<{mailto}>, <{url}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        msg["Content-Language"] = lang
        msg.set_content(text)
        msg.add_alternative(html, subtype="html")
        html_part = msg.get_payload()[1]  # type: ignore[index]
        for person in (sender, expert, liaison if liaison is not sender else {}):
            if person and person["photo_cid"] and person["photo_cid"] in html:
                photo = d.service.photo if person["is_service"] else None
                if photo is None:
                    photo = (d.liaisons.get(person["id"]) or d.experts[person["id"]]).photo
                html_part.add_related(
                    self.face(photo or ""),
                    "image",
                    "jpeg",
                    cid=f"<{person['photo_cid']}>",
                    disposition="inline",
                    filename=f"{person['id']}.jpg",
                )
        return msg.as_bytes(policy=email_policy.SMTP)


def run_naive(naive: Naive, recipients: list[Recipient]) -> tuple[float, int]:
    total = 0
    start = time.perf_counter()
    for r in recipients:
        total += len(naive.message(r))
    return time.perf_counter() - start, total


# ----------------------------------------------------------------------------- memory run


def mem_child(n: int) -> None:
    """In a fresh process: build, load, prepare and stream n messages; print JSON."""
    with tempfile.TemporaryDirectory(prefix="outreach-bench-mem-") as tmp:
        t0 = time.perf_counter()
        root = build_workspace(Path(tmp) / "ws", n)
        ws = load(root)
        prepared = PreparedCampaign(ws, ws.campaign(CAMPAIGN))
        t1 = time.perf_counter()
        before = rss_mb()
        seconds, total = run_outreach(prepared, prepared.recipients)
        after = rss_mb()
        print(
            json.dumps(
                {
                    "n": len(prepared.recipients),
                    "load_s": round(t1 - t0, 2),
                    "render_s": round(seconds, 2),
                    "rate": round(len(prepared.recipients) / seconds, 1),
                    "bytes": total,
                    "rss_before_loop_mb": round(before, 1),
                    "rss_after_loop_mb": round(after, 1),
                    "peak_mb": round(maxrss_mb(), 1),
                }
            )
        )


def memory_run(n: int) -> dict[str, Any]:
    env = dict(os.environ, OUTREACH_SECRET=SECRET)
    done = subprocess.run(
        [sys.executable, __file__, "--mem-child", str(n)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"memory run failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="recipients to render (default 10000)")
    ap.add_argument(
        "--baseline-n",
        type=int,
        default=None,
        help="recipients for the naive baseline (default: the same --n)",
    )
    ap.add_argument(
        "--mem-n",
        type=int,
        default=100_000,
        help="recipients of the streamed memory run in a child process (0: skip)",
    )
    ap.add_argument("--mem-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ["OUTREACH_SECRET"] = SECRET
    for name in ("OUTREACH_WORKSPACE", "OUTREACH_DATABASE_URL"):
        os.environ.pop(name, None)
    if args.mem_child is not None:
        mem_child(args.mem_child)
        return

    with tempfile.TemporaryDirectory(prefix="outreach-bench-") as tmp:
        t0 = time.perf_counter()
        root = build_workspace(Path(tmp) / "ws", args.n)
        ws = load(root)
        prepared = PreparedCampaign(ws, ws.campaign(CAMPAIGN))
        recipients = prepared.recipients
        print(
            f"workspace: {len(ws.researchers)} researchers, {len(recipients)} recipients of "
            f"{CAMPAIGN}, loaded and planned in {time.perf_counter() - t0:.1f} s"
        )
        naive = Naive(ws, prepared)
        # Warm both (imports, first template compile) on a few recipients, not measured.
        run_outreach(prepared, recipients[:20])
        run_naive(naive, recipients[:20])
        seconds, total = run_outreach(prepared, recipients)
        rate = len(recipients) / seconds
        print(
            f"outreach: {len(recipients)} messages in {seconds:.2f} s = {rate:.0f} msg/s "
            f"(avg {total / len(recipients) / 1024:.1f} KiB)"
        )
        base_recipients = recipients[: args.baseline_n] if args.baseline_n else recipients
        b_seconds, b_total = run_naive(naive, base_recipients)
        b_rate = len(base_recipients) / b_seconds
        print(
            f"baseline: {len(base_recipients)} messages in {b_seconds:.2f} s = {b_rate:.0f} msg/s "
            f"(avg {b_total / len(base_recipients) / 1024:.1f} KiB)"
        )
        ratio = rate / b_rate
        print(f"ratio: {ratio:.2f}x (target >= 2x)")
        main_peak = maxrss_mb()
    peak = f"{main_peak:.0f}"
    mem_n = 0
    if args.mem_n:
        mem = memory_run(args.mem_n)
        mem_n = mem["n"]
        print(
            f"memory: {mem['n']} recipients streamed in {mem['render_s']} s ({mem['rate']} msg/s; "
            f"build+load+plan {mem['load_s']} s); RSS {mem['rss_before_loop_mb']} MB before "
            f"the loop, {mem['rss_after_loop_mb']} MB after; peak {mem['peak_mb']} MB "
            "(target < 200 MB)"
        )
        peak = f"{mem['peak_mb']:.0f}"
    print(
        f"RESULT render_rate={rate:.0f} baseline_rate={b_rate:.0f} ratio={ratio:.2f} "
        f"peak_mb={peak} mem_n={mem_n} n={len(recipients)}"
    )


if __name__ == "__main__":
    main()
