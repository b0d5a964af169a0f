"""The words of the public pages, in the languages the researchers read (fi, sv, en).

Placeholders: ``{name}`` the sender, ``{organisation}``, ``{email}`` the service address,
``{minutes}`` how long an opt-out can be undone. A workspace language without texts here
gets the English ones.
"""

from __future__ import annotations

from collections.abc import Iterable

FALLBACK = "en"

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Unsubscribe",
        "ask": "Stop these messages?",
        "lead": "{name} sends you news from {organisation}. Press the button and you will "
        "receive no more of these messages.",
        "button": "Unsubscribe",
        "done_title": "You are unsubscribed",
        "done": "You will receive no more of these messages from {name}.",
        "undo_hint": "Pressed it by mistake? You can undo this for {minutes} minutes.",
        "undo": "Undo: keep sending me messages",
        "undone_title": "You are still subscribed",
        "undone": "Nothing has changed: you will keep receiving messages from {name}.",
        "again": "Unsubscribe after all",
        "neutral_title": "Unsubscribe",
        "neutral": "We could not confirm this link. If you do not want our messages, write "
        "to {email} and we will remove your address.",
        "busy_title": "Received",
        "busy": "Your request has been received and takes effect shortly. You need not do "
        "anything more.",
        "busy_lost": "We cannot take requests just now. Please try again in a few minutes, "
        "or write to {email}.",
        "contact": "Questions? Write to {email}.",
    },
    "fi": {
        "title": "Peru tilaus",
        "ask": "Lopetetaanko nämä viestit?",
        "lead": "{name} lähettää sinulle uutisia: {organisation}. Paina painiketta, niin et "
        "saa enää näitä viestejä.",
        "button": "Peru tilaus",
        "done_title": "Tilaus on peruttu",
        "done": "Et saa enää näitä viestejä lähettäjältä {name}.",
        "undo_hint": "Painoitko vahingossa? Voit perua tämän {minutes} minuutin ajan.",
        "undo": "Peru: haluan saada viestejä edelleen",
        "undone_title": "Tilaus jatkuu",
        "undone": "Mikään ei muuttunut: saat viestejä lähettäjältä {name} edelleen.",
        "again": "Peru tilaus kuitenkin",
        "neutral_title": "Peru tilaus",
        "neutral": "Emme voineet vahvistaa tätä linkkiä. Jos et halua viestejämme, kirjoita "
        "osoitteeseen {email}, niin poistamme osoitteesi.",
        "busy_title": "Vastaanotettu",
        "busy": "Pyyntösi on vastaanotettu, ja se tulee voimaan hetken kuluttua. Sinun ei "
        "tarvitse tehdä muuta.",
        "busy_lost": "Emme voi juuri nyt käsitellä pyyntöjä. Yritä uudelleen muutaman "
        "minuutin kuluttua tai kirjoita osoitteeseen {email}.",
        "contact": "Kysyttävää? Kirjoita osoitteeseen {email}.",
    },
    "sv": {
        "title": "Avsluta prenumerationen",
        "ask": "Vill du inte längre få dessa meddelanden?",
        "lead": "{name} skickar dig nyheter från {organisation}. Tryck på knappen så får du "
        "inga fler av dessa meddelanden.",
        "button": "Avsluta prenumerationen",
        "done_title": "Prenumerationen är avslutad",
        "done": "Du får inga fler av dessa meddelanden från {name}.",
        "undo_hint": "Tryckte du av misstag? Du kan ångra det i {minutes} minuter.",
        "undo": "Ångra: jag vill fortsätta få meddelanden",
        "undone_title": "Prenumerationen fortsätter",
        "undone": "Ingenting har ändrats: du får fortfarande meddelanden från {name}.",
        "again": "Avsluta ändå",
        "neutral_title": "Avsluta prenumerationen",
        "neutral": "Vi kunde inte bekräfta länken. Om du inte vill ha våra meddelanden, skriv "
        "till {email} så tar vi bort din adress.",
        "busy_title": "Mottaget",
        "busy": "Din begäran har tagits emot och träder i kraft inom kort. Du behöver inte "
        "göra något mer.",
        "busy_lost": "Vi kan inte ta emot begäran just nu. Försök igen om några minuter "
        "eller skriv till {email}.",
        "contact": "Frågor? Skriv till {email}.",
    },
}


def texts(lang: str) -> dict[str, str]:
    return TEXTS.get(lang, TEXTS[FALLBACK])


def page_language(
    lang: str | None, offered: Iterable[str], accept: str | None, default: str = FALLBACK
) -> str:
    """The language of a public page: the message's own, else the reader's browser's
    first choice that the workspace offers and we have words for, else the workspace's
    default language (English when there are no words for it)."""
    choices = [x for x in offered if x in TEXTS]
    if lang in TEXTS:
        return lang
    ranked: list[tuple[float, int, str]] = []
    for n, part in enumerate((accept or "").split(",")[:20]):
        code, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        base = code.strip().lower().split("-")[0]
        if base in choices and quality > 0:
            ranked.append((-quality, n, base))
    if ranked:
        return min(ranked)[2]
    return default if default in TEXTS else FALLBACK
