"""Who wrote this, a person or a machine? Bounce → auto-reply → unsubscribe → reply →
inbound → unrelated, in that order, because machines answer with In-Reply-To too (Sieve
vacation, Exchange OOF): auto-replies must be ruled out before a reply is credited.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from outreach.message.tokens import parse_message_id
from outreach.track.authres import dmarc_result
from outreach.track.bounces import is_address
from outreach.track.own_words import own_words
from outreach.track.parse import Parsed

REPLY, AUTO_REPLY, BOUNCE_HARD, BOUNCE_SOFT = "reply", "auto_reply", "bounce_hard", "bounce_soft"
UNSUBSCRIBE, INBOUND, UNRELATED, UNPARSEABLE = "unsubscribe", "inbound", "unrelated", "unparseable"
KINDS = (REPLY, AUTO_REPLY, BOUNCE_HARD, BOUNCE_SOFT, UNSUBSCRIBE, INBOUND, UNRELATED, UNPARSEABLE)


@dataclass(frozen=True)
class Context:
    domain: str
    our_addresses: frozenset[str] = frozenset()  # liaisons, experts, the service
    researchers: frozenset[str] = frozenset()
    unsubscribe_address: str | None = None
    authserv_id: str | None = None  # whose Authentication-Results are believed
    senders: Mapping[str, str] = field(default_factory=dict)  # ledger sender_id -> address


@dataclass(frozen=True)
class Decision:
    kind: str
    reason: str
    referenced: str | None = None  # our Message-ID this answers or bounces
    recipient: str | None = None  # for bounces: the address that failed
    evidence: tuple[str, ...] = field(default_factory=tuple)
    # the trusted server said dmarc=fail: credited only with our Message-ID in the ledger
    dmarc_fail: str | None = None


_BOUNCE_FROM = re.compile(
    r"^(mailer-daemon|postmaster|mail-daemon|mailerdaemon|mdaemon|bounce[s]?)@", re.I
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery status notification|delivery failure|failure notice|"
    r"mail delivery failed|returned mail|delivery has failed|could not be delivered|"
    r"non[- ]?delivery|nondeliverable|unzustellbar|toimitus epäonnistui|kan inte levereras|"
    r"olevererbart|non remis|delivery delayed|delayed mail|warning: message .* delayed",
    re.I,
)
_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_CODE = re.compile(r"\b([45])\d\d[ -]")
_SOFT_WORDS = re.compile(
    r"delay|will (be )?retr|still trying|temporar|mailbox (is )?full|over quota|"
    r"try again later|greylist",
    re.I,
)
_HARD_WORDS = re.compile(
    r"permanent(ly)? (error|failure|fatal)|user unknown|no such (user|mailbox|recipient)|"
    r"address not found|does not exist|recipient not found|couldn't deliver|could not deliver|"
    r"unknown user|mailbox unavailable|invalid recipient|recipientnotfound|account .* disabled",
    re.I,
)

_AUTO_SUBJECT = re.compile(
    r"^\s*(automatic reply|auto(matic)?[- ]?(reply|response)|autoreply|out of (the )?office|"
    r"automaattinen vastaus|poissaolo|lomalla|automatiskt svar|frånvaro|autosvar|"
    r"automatische antwort|abwesenheit(snotiz)?|réponse automatique|absence|"
    r"respuesta automática|risposta automatica|vacation|on vacation|away from)",
    re.I,
)
_OOO_BODY = re.compile(
    r"(i am|i'm|i will be|i'll be) (currently |now )?(out of (the )?office|away|on (annual |parental |sick )?leave|on vacation|on holiday|travel+ing)"
    r"|out of (the )?office (until|from|through|till)"
    r"|(olen|oon) (lomalla|poissa|vuosilomalla|virkavapaalla|matkoilla)|poissa toimistolta"
    r"|jag är (på semester|ledig|tjänstledig|borta|frånvarande|föräldraledig)"
    r"|ich bin (bis|vom|ab|derzeit|zurzeit|momentan|im urlaub|nicht im büro)|nicht im büro|abwesend"
    r"|je suis (absent|absente|en congé|en vacances)|absent(e)? du bureau"
    r"|this is an automatic (reply|response)|automatic (reply|response)|auto-?reply"
    r"|tämä on automaattinen vastaus|detta är ett automatiskt svar"
    r"|dies ist eine automatische antwort|ceci est une réponse automatique",
    re.I,
)
_RETURN = re.compile(
    r"\b(back|return|returning|palaan|paluu|takaisin|tillbaka|åter|zurück|wieder|de retour|retour)\b",
    re.I,
)

_UNSUB = re.compile(
    r"\b(unsubscribe|remove me|take me off|opt[- ]?out|stop (sending|emailing)|"
    r"peru(a|n)? (tämä |minun )?tilau(s|ksen|kseni)|peruuta tilaus|poista minut|en halua (enää )?(näitä|viestejä)|"
    r"avsluta (min |mina )?prenumeration(en)?|avregistrera|ta bort mig|sluta skicka|"
    r"abmelden|abbestellen|austragen|désabonner|désinscri|"
    r"retirer de (votre|la|cette) liste|avanmäl)",
    re.I,
)
_NEGATION = re.compile(
    r"\b(don['’]?t|do not|never|not|älä|ei|inte|nicht|ne pas)\W+(\w+\W+){0,2}$", re.I
)
_SYSTEM_SENDER = re.compile(
    r"^(no-?reply|do-?not-?reply|donotreply|notifications?|alerts?|system|helpdesk|"
    r"servicedesk|it-?support|root|daemon)[.@+-]",
    re.I,
)
_REPLY_SUBJECT = re.compile(r"^\s*(re|vs|sv|aw|antw|réf|ref|ynt|odp)\s*(\[\d+\])?\s*:", re.I)


def our_ids(ids: Iterable[str], domain: str) -> list[str]:
    out = []
    for mid in ids:
        parsed = parse_message_id(mid)
        # outside a workspace (no domain) the token format alone says it is ours
        if parsed and (not domain or mid.lower().rstrip(">").endswith("@" + domain.lower())):
            out.append(mid.lower())
    return out


def _referenced(p: Parsed, ctx: Context, attached: bool = False) -> str | None:
    """Our Message-ID this message answers. Returned (attached) messages count only for
    bounces: a researcher forwarding our newsletter with a question is not replying."""
    sources = [p.in_reply_to, p.references[::-1]] + ([p.attached_ids] if attached else [])
    for candidates in sources:
        found = our_ids(candidates, ctx.domain)
        if found:
            return found[0]
    return None


def _referenced_in_body(p: Parsed, ctx: Context) -> str | None:
    found = our_ids(re.findall(r"<[^<>\s]+>", p.text), ctx.domain)
    return found[0] if found else None


# The List-Unsubscribe mailto: link carries `unsubscribe TOKEN.CAMPAIGN` as its subject
# (compose.py), so a request sent from another address still names the recipient.
_SUBJECT_TOKEN = re.compile(r"(?<![a-z0-9])([a-z2-7]{26})\.([a-z0-9][a-z0-9._-]*[a-z0-9])", re.I)


def _referenced_by_token(p: Parsed, ctx: Context) -> str | None:
    if not ctx.domain:
        return None
    m = _SUBJECT_TOKEN.search(p.subject)
    if m is None:
        return None
    return f"<{m.group(1).lower()}.{m.group(2).lower()}@{ctx.domain.lower()}>"


def _is_bounce(p: Parsed) -> tuple[bool, str]:
    if p.dsn is not None:
        return True, "delivery status notification (RFC 3464)"
    if p.headers.get("x-failed-recipients"):
        return True, "X-Failed-Recipients header"
    sender = p.from_address
    if _BOUNCE_FROM.match(sender) and (
        _BOUNCE_SUBJECT.search(p.subject)
        or _HARD_WORDS.search(p.text)
        or _SOFT_WORDS.search(p.text[:3000])
    ):
        return True, f"sent by {sender.split('@')[0]} with a delivery failure text"
    if _REPLY_SUBJECT.match(p.subject) and not p.headers.get("auto-submitted"):
        return False, ""  # a person answering about a bounce, perhaps quoting it
    if _BOUNCE_SUBJECT.search(p.subject) and (
        p.headers.get("return-path", "").strip() in ("<>", "")
        and (_HARD_WORDS.search(p.text) or _ENHANCED.search(p.text))
    ):
        return True, "null sender and a delivery failure subject"
    if "qmail-send program" in p.text[:2000]:
        return True, "qmail-send failure notice"
    if p.failed is not None:
        return True, f"a mail system's failure notice naming {p.failed.first} (flufl.bounce)"
    return False, ""


def failed_recipient(p: Parsed) -> str | None:
    """The address a bounce says failed: the DSN's, X-Failed-Recipients, flufl.bounce's
    reading, else the one To of the returned message (we send each message to one person)."""
    if p.dsn is not None and p.dsn.recipient:
        return p.dsn.recipient
    failed = p.headers.get("x-failed-recipients", "").split(",")[0].strip().strip("<>").lower()
    if is_address(failed):
        return failed
    if p.failed is not None and p.failed.first:
        return p.failed.first
    returned = set(p.returned_to)
    return returned.pop() if len(returned) == 1 else None


def _bounce_kind(p: Parsed) -> tuple[str, str, str | None]:
    recipient = failed_recipient(p)
    if p.dsn is not None:
        status = p.dsn.status or ""
        if p.dsn.action in ("delayed", "relayed", "delivered", "expanded"):
            return BOUNCE_SOFT, f"Action: {p.dsn.action} (Status {status or '?'})", recipient
        if status.startswith("5"):
            return BOUNCE_HARD, f"Status {status}", recipient
        if status.startswith("4"):
            return BOUNCE_SOFT, f"Status {status}", recipient
    head = p.text[:6000]
    codes = _ENHANCED.findall(head)
    if any(c[0] == "5" for c in codes):
        code = next(".".join(c) for c in codes if c[0] == "5")
        return BOUNCE_HARD, f"status {code} in the failure text", recipient
    if any(c[0] == "4" for c in codes):
        return BOUNCE_SOFT, "temporary failure text", recipient
    if p.failed is not None:
        if p.failed.permanent:
            return BOUNCE_HARD, "a permanent failure (flufl.bounce)", recipient
        return BOUNCE_SOFT, "a temporary failure (flufl.bounce)", recipient
    if _SOFT_WORDS.search(head) or re.search(r"delay", p.subject, re.I):
        return BOUNCE_SOFT, "temporary failure text", recipient
    if _HARD_WORDS.search(head):
        return BOUNCE_HARD, "permanent failure text", recipient
    smtp = _SMTP_CODE.findall(head)
    if smtp and smtp[0] == "4":
        return BOUNCE_SOFT, "4xx reply in the failure text", recipient
    return BOUNCE_HARD, "delivery failure without a temporary status", recipient


def _auto_reply(p: Parsed, own: str) -> str | None:
    h = p.headers
    auto = h.get("auto-submitted", "").strip().lower()
    if auto and auto != "no":
        return f"Auto-Submitted: {auto} (RFC 3834)"
    for name in ("x-autoreply", "x-autorespond"):
        if name in h:
            return f"{name} header"
    if "x-auto-response-suppress" in h and _AUTO_SUBJECT.search(p.subject):
        return "X-Auto-Response-Suppress with an automatic-reply subject (Exchange)"
    precedence = (h.get("precedence") or h.get("x-precedence") or "").strip().lower()
    if precedence == "auto_reply":
        return "Precedence: auto_reply"
    if _AUTO_SUBJECT.search(p.subject):
        return f"automatic-reply subject `{p.subject[:60]}`"
    head = (own or p.text)[:1500]
    m = _OOO_BODY.search(head)
    if m and (_RETURN.search(head) or len(head) < 600) and not _human_signals(head):
        return f"out-of-office text `{m.group(0)[:50]}`"
    return None


def _human_signals(text: str) -> bool:
    """A person mentioning their absence while answering ("away next week, but yes…")."""
    return bool(
        re.search(
            r"\b(but|yes|interested|kiinnostunut|kyllä|mutta|gärna|men |ja,|aber|mais)\b",
            text[:400],
            re.I,
        )
    )


_BARE_STOP = re.compile(
    r"^\W*(stop|unsubscribe|remove|lopeta|peru|sluta|avsluta|stopp|abmelden|arrêter|arrêt)\W*$",
    re.I,
)


def _unsubscribe(p: Parsed, own: str, ctx: Context) -> str | None:
    if ctx.unsubscribe_address and ctx.unsubscribe_address in p.to:
        return f"sent to the unsubscribe address {ctx.unsubscribe_address}"
    if re.match(r"^\s*(unsubscribe|peru tilaus|avsluta prenumeration)\b", p.subject, re.I):
        return f"subject `{p.subject[:40]}`"
    text = own[:800]
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    first_paragraph = text.strip().split("\n\n", 1)[0]
    if _BARE_STOP.match(first_line) and len(first_paragraph.split()) <= 3:
        return f"a one-word opt-out: `{first_line.strip()[:20]}`"
    for m in _UNSUB.finditer(text):
        before = text[max(0, m.start() - 40) : m.start()]
        if _NEGATION.search(before):
            continue
        return f"asks to unsubscribe: `{m.group(0)}`"
    return None


def classify(p: Parsed, ctx: Context) -> Decision:
    decision = _classify(p, ctx)
    if decision.kind == UNRELATED or dmarc_result(p.auth_results, ctx.authserv_id) != "fail":
        return decision
    if decision.referenced is None:
        return Decision(
            UNRELATED,
            f"DMARC fail reported by {ctx.authserv_id}: the sender may be forged, and without "
            f"our Message-ID it is neither credited nor obeyed (else {decision.kind}: "
            f"{decision.reason})",
        )
    return replace(decision, dmarc_fail=ctx.authserv_id)


_BODY_MESSAGE_ID = re.compile(r"^[ \t>]*Message-ID:[ \t]*(<[^<>\s]+>)", re.I | re.M)


def returned_ids(p: Parsed) -> list[str]:
    """The Message-IDs a bounce carries of the message it is about: threading headers, the
    returned message or headers, an inline copy's Message-ID line."""
    inline = [m.lower() for m in _BODY_MESSAGE_ID.findall(p.text)]
    return p.in_reply_to + p.references + p.attached_ids + inline


def _classify(p: Parsed, ctx: Context) -> Decision:
    referenced = _referenced(p, ctx)
    is_bounce, why = _is_bounce(p)
    if is_bounce:
        kind, detail, recipient = _bounce_kind(p)
        ref = _referenced(p, ctx, attached=True) or _referenced_in_body(p, ctx)
        return Decision(kind, f"{why}; {detail}", ref, recipient)
    own = own_words(p.text)
    known = p.from_address in ctx.researchers
    to_unsubscribe = bool(ctx.unsubscribe_address and ctx.unsubscribe_address in p.to)
    # Machines and strangers only concern us when they answer our mail or are researchers.
    concerns_us = bool(referenced) or known or to_unsubscribe
    auto = _auto_reply(p, own)
    if auto:
        absence = _AUTO_SUBJECT.search(p.subject) or _OOO_BODY.search((own or p.text)[:1500])
        if not concerns_us and (_SYSTEM_SENDER.match(p.from_address) or not absence):
            return Decision(UNRELATED, f"machine-generated ({auto}), not about our mail")
        return Decision(AUTO_REPLY, auto, referenced)
    precedence = (p.headers.get("precedence") or "").strip().lower()
    unsub = _unsubscribe(p, own, ctx) if concerns_us else None
    if unsub:
        ref = referenced or _referenced_by_token(p, ctx) or _referenced_in_body(p, ctx)
        return Decision(UNSUBSCRIBE, unsub, ref)
    if referenced:
        return Decision(REPLY, "In-Reply-To/References name one of our messages", referenced)
    if precedence in ("bulk", "junk", "list") or "list-id" in p.headers:
        return Decision(UNRELATED, f"bulk or list mail ({precedence or 'List-Id'})")
    if known and (p.in_reply_to or p.references):
        return Decision(INBOUND, "a known researcher continuing a thread that is not ours")
    if known and _REPLY_SUBJECT.match(p.subject):
        return Decision(REPLY, "a known researcher answering (Re: subject), no message reference")
    if known:
        return Decision(INBOUND, "a known researcher writing fresh")
    return Decision(UNRELATED, "not from a known researcher and no reference to our mail")
