"""Built-in strings every researcher sees, per language, with a fallback to English.

Templates call ``t("key")``; a workspace may add languages by overriding templates.
"""

from __future__ import annotations

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "unsubscribe": "Unsubscribe",
        "unsubscribe_line": "You receive this because you work at {organisation}. Not interested?",
        "reader_line": "You receive this as a researcher in {place}.",
        "reader_line_unplaced": "You receive this as a researcher whom {organisation} supports.",
        "not_interested": "Not interested?",
        "reply_prompt": "Just reply to this message: it comes to me personally.",
        "reply_prompt_service": "Reply to this message to reach the service.",
        "introduce_heading": "Let me introduce {expert}",
        "contact": "Contact",
        "phone": "Phone",
        "email": "Email",
        "your_liaison": "Your liaison at {organisation}",
        "view_online": "Read in your browser",
        "sent_on": "Sent {date}",
        "colleague": "colleague",
    },
    "fi": {
        "unsubscribe": "Peru tilaus",
        "unsubscribe_line": "Saat tämän viestin, koska työskentelet organisaatiossa "
        "{organisation}. Etkö halua näitä viestejä?",
        "reader_line": "Saat tämän viestin tutkijana: {place}.",
        "reader_line_unplaced": "Saat tämän viestin tutkijana, jota {organisation} tukee.",
        "not_interested": "Etkö halua näitä viestejä?",
        "reply_prompt": "Vastaa suoraan tähän viestiin: se tulee minulle henkilökohtaisesti.",
        "reply_prompt_service": "Vastaa tähän viestiin, niin tavoitat palvelun.",
        "introduce_heading": "Saanko esitellä: {expert}",
        "contact": "Yhteystiedot",
        "phone": "Puhelin",
        "email": "Sähköposti",
        "your_liaison": "Yhteyshenkilösi, {organisation}",
        "view_online": "Lue selaimessa",
        "sent_on": "Lähetetty {date}",
        "colleague": "kollega",
    },
    "sv": {
        "unsubscribe": "Avsluta prenumerationen",
        "unsubscribe_line": "Du får det här meddelandet eftersom du arbetar vid "
        "{organisation}. Inte intresserad?",
        "reader_line": "Du får det här meddelandet som forskare vid {place}.",
        "reader_line_unplaced": "Du får det här meddelandet som forskare som {organisation} "
        "stöder.",
        "not_interested": "Inte intresserad?",
        "reply_prompt": "Svara direkt på det här meddelandet: svaret kommer till mig personligen.",
        "reply_prompt_service": "Svara på det här meddelandet för att nå tjänsten.",
        "introduce_heading": "Får jag presentera {expert}",
        "contact": "Kontakt",
        "phone": "Telefon",
        "email": "E-post",
        "your_liaison": "Din kontaktperson vid {organisation}",
        "view_online": "Läs i webbläsaren",
        "sent_on": "Skickat {date}",
        "colleague": "kollega",
    },
}

FALLBACK = "en"


def translate(lang: str, key: str, **values: object) -> str:
    table = STRINGS.get(lang) or STRINGS[FALLBACK]
    text = table.get(key) or STRINGS[FALLBACK].get(key)
    if text is None:
        raise KeyError(f"no built-in string `{key}`")
    return text.format(**values) if values else text
