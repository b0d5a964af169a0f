"""DKIM: real keys made in the test, real messages composed from the example workspace,
verified with dkimpy's own verifier against the public key served as the DNS TXT record.

Keys come from the ``openssl`` command when there is one, else from a small pure-Python RSA
key generator below (so the suite never depends on a crypto package being installed).
"""

from __future__ import annotations

import base64
import email
import email.policy
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest
from foundation_helpers import cli, copy_example

from outreach.errors import ConfigError, Location
from outreach.message.dkim import OVERSIGNED, SIGNED_HEADERS, DkimSigner, from_domain
from outreach.message.prepared import PreparedCampaign
from outreach.workspace.keys import load_key, rsa_public_der
from outreach.workspace.loader import load_workspace
from outreach.workspace.settings import Dkim

pytestmark = pytest.mark.timeout(120)

SELECTOR = "outreach2026"
DOMAIN = "uni.example"
REQUIRED = (
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "mime-version",
    "content-type",
)


@pytest.fixture(autouse=True)
def _token_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTREACH_SECRET", "dkim-tests-token-secret")


# ---------------------------------------------------------------------------- keys


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der_int(v: int) -> bytes:
    body = v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big")
    return b"\x02" + _der_len(len(body)) + body


def _probable_prime(n: int) -> bool:
    if n < 2:
        return False
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71):
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for _ in range(24):
        x = pow(secrets.randbelow(n - 3) + 2, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _python_rsa_pem(bits: int) -> bytes:
    """A PKCS#1 RSA private key made with Python integers (fallback without openssl)."""
    e = 65537
    while True:
        primes = []
        while len(primes) < 2:
            c = secrets.randbits(bits // 2) | (3 << (bits // 2 - 2)) | 1
            if _probable_prime(c):
                primes.append(c)
        p, q = primes
        phi = (p - 1) * (q - 1)
        if p != q and phi % e and (p * q).bit_length() == bits:
            break
    n, d = p * q, pow(e, -1, phi)
    fields = [0, n, e, d, p, q, d % (p - 1), d % (q - 1), pow(q, -1, p)]
    body = b"".join(_der_int(v) for v in fields)
    der = b"\x30" + _der_len(len(body)) + body
    b64 = base64.b64encode(der).decode()
    lines = "\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
    return f"-----BEGIN RSA PRIVATE KEY-----\n{lines}\n-----END RSA PRIVATE KEY-----\n".encode()


def rsa_key(bits: int = 2048) -> tuple[bytes, bytes]:
    """(private PEM, public SubjectPublicKeyInfo DER)."""
    openssl = shutil.which("openssl")
    if openssl:
        pem = subprocess.run(
            [openssl, "genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}"],
            capture_output=True,
            check=True,
        ).stdout
        der = subprocess.run(
            [openssl, "pkey", "-pubout", "-outform", "DER"],
            input=pem,
            capture_output=True,
            check=True,
        ).stdout
        return pem, der
    pem = _python_rsa_pem(bits)
    parsed = dkim.crypto.parse_pem_private_key(pem)
    return pem, rsa_public_der(parsed["modulus"], parsed["publicExponent"])


_KEYS: dict[int, tuple[bytes, bytes]] = {}


def cached_key(bits: int = 2048, slot: int = 0) -> tuple[bytes, bytes]:
    """Keys are slow to make without openssl: one per (size, slot) per test run."""
    if (bits * 10 + slot) not in _KEYS:
        _KEYS[bits * 10 + slot] = rsa_key(bits)
    return _KEYS[bits * 10 + slot]


def txt(public_der: bytes, kind: str = "rsa") -> bytes:
    return f"v=DKIM1; k={kind}; p={base64.b64encode(public_der).decode()}".encode()


def verifier(records: dict[str, bytes]) -> Callable[[bytes], bool]:
    """dkim.verify with DNS answered from ``records`` (name without the final dot)."""

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name.decode().rstrip(".").lower())

    def verify(message: bytes) -> bool:
        return bool(dkim.verify(message, dnsfunc=dnsfunc))

    return verify


def write_key(root: Path, pem: bytes, name: str = "dkim.pem") -> str:
    keydir = root / "keys"
    keydir.mkdir(exist_ok=True)
    path = keydir / name
    path.write_bytes(pem)
    path.chmod(0o600)
    return f"keys/{name}"


def configure(root: Path, block: str) -> int:
    """Append a dkim block to outreach.yaml; returns the line where it starts."""
    settings = root / "outreach.yaml"
    text = settings.read_text(encoding="utf-8")
    if not text.endswith("\n"):
        text += "\n"
    settings.write_text(text + block, encoding="utf-8")
    return text.count("\n") + 1


def signature_tags(message: bytes) -> dict[str, str]:
    msg = email.message_from_bytes(message, policy=email.policy.compat32)
    raw = re.sub(r"\s+", "", str(msg["DKIM-Signature"]))
    return dict(part.split("=", 1) for part in raw.split(";") if "=" in part)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return copy_example(tmp_path / "ws")


@pytest.fixture
def signed_root(root: Path) -> Path:
    pem, _ = cached_key()
    path = write_key(root, pem)
    configure(root, f"dkim: {{selector: {SELECTOR}, key_file: {path}}}\n")
    return root


def default_records() -> dict[str, bytes]:
    return {f"{SELECTOR}._domainkey.{DOMAIN}": txt(cached_key()[1])}


# ---------------------------------------------------------------------------- signing


def test_composed_example_messages_verify_and_cover_the_required_headers(
    signed_root: Path,
) -> None:
    ws = load_workspace(explicit=signed_root)
    verify = verifier(default_records())
    checked = 0
    for cid in sorted(ws.campaigns):
        prepared = PreparedCampaign(ws, ws.campaign(cid))
        assert prepared.signer is not None
        recipients = prepared.sample() + prepared.recipients[:5]
        for recipient in recipients:
            data = prepared.message(recipient).composed.data
            assert data.startswith(b"DKIM-Signature: "), data[:80]
            assert verify(data), f"{cid} {recipient.email}"
            tags = signature_tags(data)
            assert tags["d"] == DOMAIN and tags["s"] == SELECTOR
            assert tags["a"] == "rsa-sha256" and tags["c"] == "relaxed/relaxed"
            signed = tags["h"].lower().split(":")
            for header in REQUIRED:
                assert header in signed, (header, signed)
            for header in ("from", "list-unsubscribe", "list-unsubscribe-post"):
                assert signed.count(header) == 2, f"{header} is not oversigned: {signed}"
            checked += 1
    assert checked >= 20


def _first_message(root: Path, cid: str = "newsletter-autumn-2026") -> bytes:
    ws = load_workspace(explicit=root)
    prepared = PreparedCampaign(ws, ws.campaign(cid))
    return prepared.message(prepared.recipients[0]).composed.data


def _replace_header(name: bytes, new_value: bytes) -> Callable[[bytes], bytes]:
    def tamper(data: bytes) -> bytes:
        pattern = re.compile(rb"^" + name + rb":.*?\r\n(?![ \t])", re.M | re.S | re.I)
        assert pattern.search(data), name
        return pattern.sub(name + b": " + new_value + b"\r\n", data, count=1)

    return tamper


def _add_header(line: bytes) -> Callable[[bytes], bytes]:
    def tamper(data: bytes) -> bytes:
        head, sep, body = data.partition(b"\r\n\r\n")
        return head + b"\r\n" + line + sep + body

    return tamper


TAMPERING: dict[str, Callable[[bytes], bytes]] = {
    "subject changed": _replace_header(b"Subject", b"You have won a prize"),
    "from changed": _replace_header(b"From", b"Mallory <mallory@uni.example>"),
    "to changed": _replace_header(b"To", b"someone.else@uni.example"),
    "reply-to changed": _replace_header(b"Reply-To", b"phish@evil.example"),
    "list-unsubscribe changed": _replace_header(
        b"List-Unsubscribe", b"<https://evil.example/unsubscribe>"
    ),
    "list-unsubscribe-post changed": _replace_header(
        b"List-Unsubscribe-Post", b"List-Unsubscribe=Two-Clicks"
    ),
    "date changed": _replace_header(b"Date", b"Mon, 01 Jan 2024 00:00:00 +0000"),
    "second From added": _add_header(b"From: Mallory <mallory@evil.example>"),
    "second List-Unsubscribe added": _add_header(b"List-Unsubscribe: <https://evil.example/u>"),
    "Cc added": _add_header(b"Cc: boss@uni.example"),
    "body changed": lambda data: data.replace(
        b"quoted-printable\r\n\r\n", b"quoted-printable\r\n\r\nX", 1
    ),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_a_tampered_message_fails_verification(signed_root: Path, case: str) -> None:
    data = _first_message(signed_root)
    verify = verifier(default_records())
    assert verify(data)
    tampered = TAMPERING[case](data)
    assert tampered != data
    assert not verify(tampered), case


def test_a_different_key_in_dns_fails(signed_root: Path) -> None:
    data = _first_message(signed_root)
    other = cached_key(slot=1)[1]
    assert not verifier({f"{SELECTOR}._domainkey.{DOMAIN}": txt(other)})(data)


def test_outbox_send_writes_signed_messages(signed_root: Path) -> None:
    run = cli(signed_root, "send", "rdm-launch-2026", "--now")
    assert run.code == 0, str(run)
    verify = verifier(default_records())
    files = [p for sub in ("new", "cur") for p in (signed_root / "outbox" / sub).glob("*")]
    assert len(files) > 20
    for path in files:
        data = path.read_bytes()
        # the outbox puts its envelope lines first; they are not signed and do not break it
        assert data.startswith(b"X-Envelope-From:")
        assert verify(data), path.name


def test_only_mail_from_the_signing_domain_or_below_is_signed(root: Path) -> None:
    pem, der = cached_key()
    configure(root, f"dkim:\n  selector: {SELECTOR}\n  key_file: {write_key(root, pem)}\n")
    liaisons = root / "people" / "liaisons.yaml"
    text = liaisons.read_text(encoding="utf-8")
    text = text.replace("email: aino.virtanen@uni.example", "email: aino.virtanen@med.uni.example")
    text = text.replace("email: lars.ekstrom@uni.example", "email: lars.ekstrom@partner.example")
    liaisons.write_text(text, encoding="utf-8")
    ws = load_workspace(explicit=root)
    prepared = PreparedCampaign(ws, ws.campaign("newsletter-autumn-2026"))
    verify = verifier(default_records())
    seen: dict[str, set[bool]] = {}
    for recipient in prepared.recipients:
        data = prepared.message(recipient).composed.data
        domain = from_domain(data)
        assert domain is not None
        signed = data.startswith(b"DKIM-Signature:")
        seen.setdefault(domain, set()).add(signed)
        if signed:
            assert verify(data)
            assert signature_tags(data)["d"] == DOMAIN  # relaxed alignment: the parent signs
    assert seen["uni.example"] == {True}
    assert seen["med.uni.example"] == {True}
    assert seen["partner.example"] == {False}

    run = cli(root, "check", "--no-render", "--json")
    warnings = [line for line in run.stdout.splitlines() if "partner.example" in line]
    assert len(warnings) == 1, run.stdout
    assert '"severity": "warning"' in warnings[0] and "people/liaisons.yaml" in warnings[0]
    assert "no DKIM key" in warnings[0]


def test_one_key_per_sending_domain(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pem1, der1 = cached_key()
    pem2, der2 = cached_key(slot=1)
    monkeypatch.setenv("PARTNER_DKIM_KEY", pem2.decode())
    configure(
        root,
        "dkim:\n"
        f"  - {{selector: {SELECTOR}, key_file: {write_key(root, pem1)}}}\n"
        "  - {selector: p1, domain: partner.example, key_env: PARTNER_DKIM_KEY}\n",
    )
    liaisons = root / "people" / "liaisons.yaml"
    liaisons.write_text(
        liaisons.read_text(encoding="utf-8").replace(
            "email: lars.ekstrom@uni.example", "email: lars.ekstrom@partner.example"
        ),
        encoding="utf-8",
    )
    ws = load_workspace(explicit=root)
    assert not ws.errors(), ws.problems
    prepared = PreparedCampaign(ws, ws.campaign("newsletter-autumn-2026"))
    records = {
        f"{SELECTOR}._domainkey.{DOMAIN}": txt(der1),
        "p1._domainkey.partner.example": txt(der2),
    }
    verify = verifier(records)
    domains = set()
    for recipient in prepared.recipients[:60]:
        data = prepared.message(recipient).composed.data
        tags = signature_tags(data)
        assert verify(data)
        assert tags["d"] == from_domain(data)
        domains.add(tags["d"])
    assert domains == {DOMAIN, "partner.example"}


def test_the_one_line_form_of_a_key_in_an_environment_variable(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pem, der = cached_key()
    monkeypatch.setenv("OUTREACH_DKIM_KEY", pem.decode().strip().replace("\n", "\\n"))
    configure(root, f"dkim: {{selector: {SELECTOR}, key_env: OUTREACH_DKIM_KEY}}\n")
    assert verifier(default_records())(_first_message(root))


def test_foreign_mail_passes_through_unchanged(tmp_path: Path) -> None:
    pem, _ = cached_key()
    (tmp_path / "k.pem").write_bytes(pem)
    key = load_key(Dkim(selector="s", key_file="k.pem"), tmp_path, DOMAIN)
    signer = DkimSigner([key])
    foreign = b"From: someone@elsewhere.example\r\nSubject: hi\r\n\r\nbody\r\n"
    assert signer(foreign) == foreign
    ours = foreign.replace(b"elsewhere.example", b"Uni.Example")
    assert signer(ours).startswith(b"DKIM-Signature:")
    assert pem.split(b"\n")[1].decode() not in repr(key)
    assert set(OVERSIGNED) <= set(SIGNED_HEADERS)


# ---------------------------------------------------------------------------- bad keys


def _key_body(pem: bytes) -> list[str]:
    """Slices of the key's base64 that must never be printed."""
    lines = [line for line in pem.decode().splitlines() if line and not line.startswith("-----")]
    return [line[8:40] for line in lines[1:6] if len(line) > 40]


def test_a_missing_key_is_a_configuration_error_before_anything_is_sent(root: Path) -> None:
    line = configure(root, f"dkim:\n  selector: {SELECTOR}\n  key_env: OUTREACH_DKIM_KEY\n")
    run = cli(root, "check", "--no-render", "--json")
    assert run.code == 0, str(run)  # another machine may hold the key: a warning here
    found = [x for x in run.stdout.splitlines() if "OUTREACH_DKIM_KEY" in x]
    assert len(found) == 1 and '"warning"' in found[0] and f'"line": {line + 2}' in found[0]

    for args in (["send", "rdm-launch-2026", "--now"], ["send", "rdm-launch-2026", "--dry-run"]):
        run = cli(root, *args)
        assert run.code == 2, str(run)
        assert "$OUTREACH_DKIM_KEY is not set" in run.stderr and "hint:" in run.stderr
    box = root / "outbox"
    assert not box.exists() or not any(p.is_file() for p in box.rglob("*"))
    import sqlite3

    db = sqlite3.connect(root / "outreach.db")
    try:
        sent = db.execute("select count(*) from ledger where status != 'planned'").fetchone()
    finally:
        db.close()
    assert sent == (0,)


BAD_KEYS: dict[str, Callable[[], bytes]] = {
    "garbage": lambda: b"this is not a key\n",
    "truncated": lambda: cached_key()[0][:300],
    "encrypted": lambda: (
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n"
        + base64.encodebytes(os.urandom(600))
        + b"-----END ENCRYPTED PRIVATE KEY-----\n"
    ),
    "too small": lambda: cached_key(512)[0],
    "public key": lambda: (
        b"-----BEGIN PUBLIC KEY-----\n"
        + base64.encodebytes(cached_key()[1])
        + b"-----END PUBLIC KEY-----\n"
    ),
}
BAD_KEY_MESSAGES = {
    "garbage": "not a private key",
    "truncated": "not a private key",
    "encrypted": "encrypted with a passphrase",
    "too small": "512 bits",
    "public key": "not a private key",
}


@pytest.mark.parametrize("case", sorted(BAD_KEYS))
def test_an_invalid_key_is_a_located_error_that_never_shows_the_key(root: Path, case: str) -> None:
    pem = BAD_KEYS[case]()
    line = configure(root, f"dkim:\n  selector: {SELECTOR}\n  key_file: {write_key(root, pem)}\n")
    run = cli(root, "check", "--no-render")
    assert run.code == 1, str(run)
    assert f"outreach.yaml:{line + 2}" in run.stderr, str(run)
    assert BAD_KEY_MESSAGES[case] in run.stderr, str(run)
    run2 = cli(root, "send", "rdm-launch-2026", "--now")
    assert run2.code == 1 and BAD_KEY_MESSAGES[case] in run2.stderr, str(run2)
    for fragment in _key_body(pem):
        assert fragment not in run.output + run2.output


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (f"dkim: {{selector: {SELECTOR}}}\n", "exactly one"),
        (f"dkim: {{selector: {SELECTOR}, key_file: a.pem, key_env: X}}\n", "exactly one"),
        ("dkim: {selector: 'bad selector!', key_env: X}\n", "DNS name"),
        (
            "dkim:\n  - {selector: a, key_env: X}\n  - {selector: b, key_env: Y}\n",
            "one key per signing domain",
        ),
    ],
)
def test_dkim_settings_are_validated(root: Path, block: str, expected: str) -> None:
    line = configure(root, block)
    run = cli(root, "check", "--no-render")
    assert run.code == 2, str(run)
    assert expected in run.stderr and f"outreach.yaml:{line}" in run.stderr, str(run)


def test_key_in_the_yaml_instead_of_a_variable_name(root: Path) -> None:
    pem, _ = cached_key()
    quoted = pem.decode().strip().replace("\n", "\\n")
    line = configure(root, f'dkim:\n  selector: {SELECTOR}\n  key_env: "{quoted}"\n')
    run = cli(root, "check", "--no-render")
    assert run.code == 1, str(run)
    assert "must name an environment variable" in run.stderr
    assert f"outreach.yaml:{line + 2}" in run.stderr
    assert "holds a private key" in run.stderr  # the secret scanner's warning, same line
    for fragment in _key_body(pem):
        assert fragment not in run.output


def test_a_key_file_others_can_read_is_warned_about(signed_root: Path) -> None:
    (signed_root / "keys" / "dkim.pem").chmod(0o644)
    run = cli(signed_root, "check", "--no-render")
    if os.name == "posix":
        assert "can be read by other users" in run.stderr and "chmod 600" in run.stderr


def test_dkim_record_prints_the_public_key_to_publish(signed_root: Path) -> None:
    run = cli(signed_root, "dkim", "record")
    assert run.code == 0, str(run)
    expected = txt(cached_key()[1]).decode()
    assert f'{SELECTOR}._domainkey.{DOMAIN}. IN TXT "{expected}"' in run.stdout


def test_dkim_record_without_dkim(root: Path) -> None:
    run = cli(root, "dkim", "record")
    assert run.code == 1 and "No `dkim:`" in run.stderr


def test_load_key_reports_the_location_it_is_given(tmp_path: Path) -> None:
    (tmp_path / "k.pem").write_bytes(b"nope")
    where = Location("outreach.yaml", 30, 3, "dkim.key_file")
    with pytest.raises(ConfigError) as info:
        load_key(Dkim(selector="s", key_file="k.pem"), tmp_path, DOMAIN, where)
    assert info.value.location == where


# ---------------------------------------------------------------------------- ed25519


def test_ed25519_keys_sign_and_verify(tmp_path: Path) -> None:
    nacl_signing = pytest.importorskip("nacl.signing", reason="ed25519 signing needs PyNaCl")
    seed = os.urandom(32)
    (tmp_path / "ed.key").write_bytes(base64.b64encode(seed))
    key = load_key(Dkim(selector="ed", key_file="ed.key"), tmp_path, DOMAIN)
    public = bytes(nacl_signing.SigningKey(seed).verify_key)
    assert key.dns_record() == f"v=DKIM1; k=ed25519; p={base64.b64encode(public).decode()}"
    message = (
        b"From: Aino <aino@uni.example>\r\nTo: r@uni.example\r\nSubject: hi\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\nbody\r\n"
    )
    signed = DkimSigner([key])(message)
    record = txt(public, "ed25519")
    assert verifier({f"ed._domainkey.{DOMAIN}": record})(signed)
    assert not verifier({f"ed._domainkey.{DOMAIN}": record})(signed.replace(b"hi", b"ho"))


def test_ed25519_without_pynacl_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Make `import nacl…` fail as it does where PyNaCl is not installed.
    for name in ("nacl", "nacl.signing", "nacl.encoding", "nacl.bindings"):
        monkeypatch.setitem(sys.modules, name, None)
    (tmp_path / "ed.key").write_bytes(base64.b64encode(os.urandom(32)))
    with pytest.raises(ConfigError, match="PyNaCl"):
        load_key(Dkim(selector="ed", key_file="ed.key"), tmp_path, DOMAIN)
