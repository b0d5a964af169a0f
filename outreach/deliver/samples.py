"""``send CAMPAIGN --test-to ADDRESS``: one sample of each combination a campaign sends
(liaison × language × arm × introduction) to one address, through the configured
transport, so it can be read in Outlook or Gmail as a researcher will read it.

A sample is the message of the combination's first recipient, with three changes: it is
addressed to ADDRESS (so its token and unsubscribe link are ADDRESS's, never the
researcher's), its subject starts ``[TEST]``, and nobody is copied (an introduced expert
is not). Nothing is written to the store: no ledger row, no quota slot, no suppression;
a reply to a sample matches no message sent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

from outreach.audience.recipients import Recipient
from outreach.deliver.plan import existing_store, plan_audience
from outreach.deliver.run import make_transport
from outreach.deliver.transports import (
    SENT,
    Credentials,
    SmtpTransport,
    Transport,
    credentials_for,
)
from outreach.errors import ConfigError, ValidationFailed
from outreach.message.prepared import Combination, PreparedCampaign, combination, combinations
from outreach.workspace.loader import Workspace
from outreach.workspace.people import AddressError, normalise_address

TEST_MARK = "[TEST]"


@dataclass
class SampleResult:
    address: str
    transport: str
    delivered_to: str
    sent: list[Combination] = field(default_factory=list)
    failed: list[tuple[Combination, str]] = field(default_factory=list)
    combinations: int = 0  # how many the campaign has (``sent`` may be fewer: --test-sample)


def test_address(address: str) -> str:
    """ADDRESS in its normal form; ConfigError (exit 2) when it is not an address."""
    try:
        return normalise_address(address.strip())
    except AddressError as exc:
        raise ConfigError(
            f"--test-to {address!r} is not an e-mail address: {exc}",
            hint="give your own address, e.g. --test-to you@uni.example",
        ) from None


def send_samples(
    ws: Workspace,
    campaign_id: str,
    address: str,
    *,
    sample: int | None = None,
    transport: str | None = None,
) -> SampleResult:
    """Send one sample per combination (the first ``sample`` of them) to ``address``."""
    to = test_address(address)  # before anything is rendered
    cf = ws.campaign(campaign_id)
    blocking = ws.errors_for(cf)
    if blocking:
        raise ValidationFailed(blocking)
    kind = transport or ws.settings.transport.kind
    if kind == "dry-run":
        raise ConfigError(
            "--test-to sends for real: the dry-run transport sends nothing",
            hint="use --transport smtp or outbox, or set transport.kind in outreach.yaml",
        )
    store = existing_store(ws.database_url())
    try:
        recipients, _rows = plan_audience(ws, cf, store)  # the arms a real send keeps
    finally:
        if store is not None:
            store.close()
    chosen = list(combinations(recipients, cf.campaign).values())
    result = SampleResult(to, kind, "", combinations=len(chosen))
    if sample is not None:
        chosen = chosen[:sample]
    prepared = PreparedCampaign(ws, cf, recipients=recipients)
    outbox = make_transport(ws, kind)
    result.delivered_to = outbox.delivered_to
    asyncio.run(_send(ws, prepared, outbox, chosen, to, result))
    return result


async def _send(
    ws: Workspace,
    prepared: PreparedCampaign,
    transport: Transport,
    chosen: list[Recipient],
    to: str,
    result: SampleResult,
) -> None:
    messages = []
    for recipient in chosen:  # every sample rendered before the first goes out
        person = recipient.researcher.model_copy(update={"email": to})
        rendered = prepared.render(replace(recipient, researcher=person))
        rendered = replace(rendered, subject=f"{TEST_MARK} {rendered.subject}", cc=())
        messages.append((recipient, prepared.composer.compose(rendered)))
    await transport.open()
    try:
        if isinstance(transport, SmtpTransport):  # a wrong login fails before any sample
            checked: set[str] = set()
            for recipient in chosen:
                creds = _credentials(ws, transport, recipient.sender_id)
                if creds.key not in checked:
                    checked.add(creds.key)
                    await transport.check(creds)
        for recipient, composed in messages:
            creds = _credentials(ws, transport, recipient.sender_id)
            outcome = await transport.deliver(composed, creds, _nothing_to_mark)
            key = combination(recipient, prepared.campaign)
            if outcome.status == SENT:
                result.sent.append(key)
            else:
                result.failed.append((key, outcome.reply))
    finally:
        await transport.close()


def _nothing_to_mark() -> None:
    """A sample has no ledger row to mark `sending`."""


def _credentials(ws: Workspace, transport: Transport, sender_id: str) -> Credentials:
    if not isinstance(transport, SmtpTransport):
        return Credentials("none")
    liaison = ws.directory.liaisons.get(sender_id)
    return credentials_for(ws.settings.transport, liaison.smtp if liaison else None, sender_id)
