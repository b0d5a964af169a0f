"""What the person wrote, wherever they wrote it: above the quote, below it, between its
paragraphs; never the quoted newsletter (whose footer says "unsubscribe") and never the
original an Outlook header block or a forwarded-message line introduces."""

from __future__ import annotations

import pytest

from outreach.track.classify import UNSUBSCRIBE, Context, classify
from outreach.track.own_words import own_words
from outreach.track.parse import _html_text, parse

FOOTER = '> To stop receiving these messages, reply "unsubscribe" or use:\n> https://u.example/x'


@pytest.mark.parametrize(
    "text,expected",
    [
        # top-posted
        (
            f"Thanks, yes!\n\nOn Tue, 10 Mar 2026, Emily wrote:\n> Dear Tom,\n{FOOTER}\n",
            "Thanks, yes!",
        ),
        # bottom-posted: the attribution is the first line
        (
            f"On Tue, 10 Mar 2026, Emily wrote:\n> Dear Tom,\n{FOOTER}\n\nPlease unsubscribe me.\n",
            "Please unsubscribe me.",
        ),
        # interleaved
        (
            "Den 2026-03-10 kl. 09:03, skrev Helena:\n> Hej!\n\nTack.\n\n> Mer text\n\nAvsluta.\n",
            "Tack.\n\nAvsluta.",
        ),
        # a Finnish attribution, wrapped attribution in English
        ("Aino Virtanen kirjoitti 10.3.2026 klo 9.03:\n> Hei\n\nKiitos\n", "Kiitos"),
        (
            "Ok.\n\nOn Tue, Mar 10, 2026 at 9:02 AM Emily Clarke <emily@uni.example>\n"
            "wrote:\n\n> Hi\n",
            "Ok.",
        ),
        ("Le mar. 10 mars 2026 à 09:02, Emily a écrit :\n> Bonjour\n\nMerci\n", "Merci"),
        # Outlook: the original follows unquoted under the header block
        (
            "Hei,\n\nkiitos.\n\nLähettäjä: Aino\nLähetetty: tiistai\nAihe: x\n\n"
            'Jos et halua, vastaa "peru tilaus"\n',
            "Hei,\n\nkiitos.",
        ),
        ("Yes\n\n-----Original Message-----\nFrom: Emily\n\nunsubscribe here\n", "Yes"),
        (
            "Yes\n________________________________\nFrom: Emily\nSent: Tuesday\n\nunsubscribe\n",
            "Yes",
        ),
        (
            "Look at this\n\n---------- Forwarded message ---------\nFrom: x\n\nunsubscribe\n",
            "Look at this",
        ),
        # an attribution over an unmarked original: the rest is the original
        (
            "Sure.\n\nOn Tue, 10 Mar 2026, Emily wrote:\nDear Tom,\nTo stop, reply unsubscribe\n",
            "Sure.",
        ),
        # the phone signature is not the person's words, and does not hide what follows
        ("Peru tilaus\n\nLähetetty iPhonesta\n\n> Aino kirjoitti:\n> Hei\n", "Peru tilaus"),
        # flattened HTML: the Outlook header block inside a line
        ("Thanks From: Emily Sent: Tuesday To: Tom Subject: news unsubscribe", "Thanks"),
        ("", ""),
        ("> only a quote\n> nothing else\n", ""),
    ],
)
def test_own_words(text: str, expected: str) -> None:
    assert own_words(text) == expected


def test_a_person_writing_on_and_wrote_is_not_an_attribution() -> None:
    text = "On Monday I wrote to the dean about this.\nPlease unsubscribe me.\n"
    assert own_words(text) == text.strip()


def test_html_blockquote_is_marked_as_a_quote() -> None:
    html = (
        "<html><head><style>p{}</style></head><body><p>Hi Emily,</p>"
        "<p>On 10 Mar 2026, Emily &lt;e@uni.example&gt; wrote:</p>"
        "<blockquote>Dear Oliver,<br>\nTo stop receiving these, reply unsubscribe</blockquote>"
        "<!-- a comment --><p>Please unsubscribe me.</p></body></html>"
    )
    text = _html_text(html)
    assert "> Dear Oliver," in text and "> To stop receiving these, reply unsubscribe" in text
    assert "a comment" not in text and "p{}" not in text
    assert own_words(text) == "Hi Emily,\n\nPlease unsubscribe me."


def _message(body: str, content_type: str = "text/plain") -> bytes:
    return (
        "From: Tom Baker <tom.baker@uni.example>\nTo: Emily <emily.clarke@uni.example>\n"
        "Subject: Re: news\nDate: Wed, 11 Mar 2026 08:00:00 +0200\nMessage-ID: <x1@example.org>\n"
        "In-Reply-To: <4erikvv4e7yse3ue6wbvts26xj.familiar-faces-2027@uni.example>\n"
        f"MIME-Version: 1.0\nContent-Type: {content_type}; charset=utf-8\n\n{body}"
    ).encode()


def test_html_only_bottom_posted_opt_out_is_an_unsubscribe() -> None:
    html = (
        "<div>On Tue, 10 Mar 2026, Emily wrote:</div><blockquote>Dear Tom,<br>"
        "reply unsubscribe to stop</blockquote><div>Please remove me from the list.</div>"
    )
    d = classify(parse(_message(html, "text/html")), Context(domain="uni.example"))
    assert d.kind == UNSUBSCRIBE, d


def test_html_only_reply_quoting_the_footer_is_a_reply() -> None:
    html = (
        "<div>Yes, Friday suits me.</div><div>On Tue, 10 Mar 2026, Emily wrote:</div>"
        "<blockquote>Dear Tom,<br>reply unsubscribe to stop</blockquote>"
    )
    d = classify(parse(_message(html, "text/html")), Context(domain="uni.example"))
    assert d.kind == "reply", d
