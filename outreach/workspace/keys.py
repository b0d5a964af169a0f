"""DKIM keys: where outreach.yaml says they are, loaded and checked (signing is in
``outreach.message.dkim``).

Keys come from a file (``key_file``) or an environment variable (``key_env``), never from
YAML, and are never logged, echoed or stored: error messages name the file or the variable,
never the content. A key that is missing, unreadable or invalid is a :class:`ConfigError`
when it is loaded (before the first message), not per message.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outreach.errors import ConfigError, Location, Problem
from outreach.workspace.settings import Dkim, Settings, path_outside
from outreach.workspace.yamlio import YamlDoc, dotted_path

CANONICALIZE = (b"relaxed", b"relaxed")  # survives re-folding by Exchange and friends

_QUIET = logging.getLogger("outreach.dkim.signing")


_QUIET.addHandler(logging.NullHandler())


_QUIET.propagate = False  # dkimpy's debug output never reaches a log


_QUIET.setLevel(logging.CRITICAL)


def _dkim_module() -> Any:
    try:
        import dkim
    except ImportError:  # pragma: no cover - dkimpy is a dependency
        raise ConfigError(
            "DKIM signing needs the dkimpy package",
            hint="pip install dkimpy (or reinstall outreach)",
        ) from None
    return dkim


RSA, ED25519 = b"rsa-sha256", b"ed25519-sha256"


MIN_RSA_BITS, RECOMMENDED_RSA_BITS = 1024, 2048  # RFC 8301


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


_ED25519_PKCS8 = bytes.fromhex("302e020100300506032b657004220420")  # + the 32-byte seed


_RSA_OID = bytes.fromhex("06092a864886f70d010101")  # rsaEncryption, tag and length included


# DER tags (X.690) for the SubjectPublicKeyInfo of DKIM's p=. It is written here because
# dkimpy's own writer (dkim.asn1.asn1_build) cannot: it has no INTEGER or BIT STRING, and its
# length encoder fails from 127 bytes on, i.e. on every RSA modulus. tests/test_dkim.py checks
# the result byte for byte against openssl's.
_INTEGER, _BIT_STRING, _NULL, _SEQUENCE = 0x02, 0x03, 0x05, 0x30


_PEM_BODY = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.S)


class DkimKeyUnavailable(ConfigError):
    """The key is not there on this machine (variable unset, file missing): ``check``
    warns, ``send`` stops before the first message."""


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    algorithm: bytes
    source: str  # "key_file PATH" or "$VARIABLE": what messages may name
    private: bytes = field(repr=False)
    bits: int | None = None  # RSA modulus size
    public: bytes = field(default=b"", repr=False)  # DNS p= value (base64)

    def __repr__(self) -> str:  # belt and braces: never the key
        return f"DkimKey({self.selector}._domainkey.{self.domain}, {self.algorithm.decode()})"

    @property
    def dns_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    def dns_record(self) -> str:
        """The TXT record to publish at :attr:`dns_name`."""
        kind = "rsa" if self.algorithm == RSA else "ed25519"
        return f"v=DKIM1; k={kind}; p={self.public.decode('ascii')}"

    def covers(self, domain: str) -> bool:
        """DMARC relaxed alignment: the From domain is ours or below it."""
        d = ascii_domain(domain)
        return d == self.domain or d.endswith("." + self.domain)


def ascii_domain(domain: str) -> str:
    d = domain.strip().rstrip(".").lower()
    try:
        return d.encode("idna").decode("ascii")
    except UnicodeError:
        return d


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(body)) + body


def _der_int(value: int) -> bytes:
    """A non-negative INTEGER: bytes for its bits and a leading 0 sign bit."""
    return _tlv(_INTEGER, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big"))


def rsa_public_der(modulus: int, exponent: int) -> bytes:
    """SubjectPublicKeyInfo of an RSA key: what DKIM's ``p=`` holds (base64)."""
    rsa_key = _tlv(_SEQUENCE, _der_int(modulus) + _der_int(exponent))
    algorithm = _tlv(_SEQUENCE, _RSA_OID + _tlv(_NULL, b""))
    # a BIT STRING's first byte counts the unused bits of its last byte: none
    return _tlv(_SEQUENCE, algorithm + _tlv(_BIT_STRING, b"\x00" + rsa_key))


def _read_key(
    cfg: Dkim, root: Path, where: Location, allowed: Sequence[Path] | None = None
) -> tuple[bytes, str]:
    if cfg.key_env:
        if not _ENV_NAME.match(cfg.key_env):
            raise ConfigError(
                "dkim.key_env must name an environment variable, not hold the key",
                location=where,
                hint="put the PEM text in a variable, e.g. `key_env: OUTREACH_DKIM_KEY`",
            )
        value = os.environ.get(cfg.key_env)
        if not value:
            raise DkimKeyUnavailable(
                f"the DKIM key variable ${cfg.key_env} is not set",
                location=where,
                hint=f'export {cfg.key_env}="$(cat dkim-private.pem)" before sending '
                "(the key never goes into YAML)",
            )
        if "\\n" in value and "\n" not in value:  # one-line form of .env files and CI secrets
            value = value.replace("\\n", "\n")
        return value.strip().encode("utf-8", "replace"), f"${cfg.key_env}"
    assert cfg.key_file is not None
    if "-----BEGIN" in cfg.key_file:
        raise ConfigError(
            "dkim.key_file holds key text, not a path",
            location=where,
            hint="save the key in a file (mode 0600, outside version control) and name "
            "that file here, or use key_env",
        )
    path = Path(cfg.key_file).expanduser()
    if not path.is_absolute():
        # An absolute key_file names its place outright (/etc/outreach/dkim.pem); a relative
        # one is the workspace's, and may not lead out of it through `..` or a link.
        outside = path_outside(root, path, allowed or [root.resolve()])
        if outside is not None:
            raise ConfigError(
                f"the DKIM key file {cfg.key_file} leads outside the workspace, to {outside}",
                location=where,
                hint="write the key file's absolute path in key_file, or name its folder "
                "under `allowed_paths:` in outreach.yaml",
            )
        path = root / path
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DkimKeyUnavailable(
            f"the DKIM key file {cfg.key_file} does not exist",
            location=where,
            hint="check the path (relative to the workspace) or make a key: "
            "openssl genrsa -out dkim.pem 2048",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read the DKIM key file {cfg.key_file}: {exc.strerror}",
            location=where,
            hint="the user running outreach must be able to read it (mode 0600, its owner)",
        ) from None
    return data.strip(), f"key_file {cfg.key_file}"


def _ed25519_public(seed: bytes) -> bytes:
    try:
        import nacl.signing
    except ImportError:
        raise ConfigError(
            "an ed25519 DKIM key needs the PyNaCl package",
            hint="pip install pynacl, or use an RSA key (openssl genrsa -out dkim.pem 2048)",
        ) from None
    verify_key = nacl.signing.SigningKey(seed).verify_key
    return base64.b64encode(bytes(verify_key))


def parse_key(data: bytes, source: str, where: Location) -> tuple[bytes, bytes, int | None, bytes]:
    """(algorithm, private key as dkimpy takes it, RSA bits, public p= value)."""
    dkim = _dkim_module()
    invalid = ConfigError(
        f"the DKIM key in {source} is not a private key dkimpy can use",
        location=where,
        hint="use an unencrypted PEM RSA key (openssl genrsa -out dkim.pem 2048) or an ed25519 key",
    )
    pem = _PEM_BODY.search(data)
    if pem is not None:
        label = pem.group(1).decode("ascii", "replace")
        if "ENCRYPTED" in label or b"Proc-Type: 4,ENCRYPTED" in data:
            raise ConfigError(
                f"the DKIM key in {source} is encrypted with a passphrase",
                location=where,
                hint="outreach cannot ask for a passphrase: export it unencrypted "
                "(openssl pkey -in key.pem -out dkim.pem) and keep that file mode 0600",
            )
        try:
            der = base64.b64decode(b"".join(pem.group(2).split()), validate=True)
        except (binascii.Error, ValueError):
            raise invalid from None
        if der.startswith(_ED25519_PKCS8) and len(der) == len(_ED25519_PKCS8) + 32:
            seed = der[len(_ED25519_PKCS8) :]
            return ED25519, base64.b64encode(seed), None, _ed25519_public(seed)
        try:
            parsed = dkim.crypto.parse_pem_private_key(data)
        except Exception:  # noqa: BLE001 - dkimpy raises several kinds; none may leak the key
            raise invalid from None
        modulus, exponent = int(parsed["modulus"]), int(parsed["publicExponent"])
        public = base64.b64encode(rsa_public_der(modulus, exponent))
        return RSA, data, modulus.bit_length(), public
    # dknewkey's ed25519 form: the base64 of the 32-byte seed on one line
    try:
        seed = base64.b64decode(b"".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise invalid from None
    if len(seed) != 32:
        raise invalid
    return ED25519, base64.b64encode(seed), None, _ed25519_public(seed)


def load_key(
    cfg: Dkim,
    root: Path,
    organisation_domain: str,
    where: Location | None = None,
    allowed: Sequence[Path] | None = None,
) -> DkimKey:
    """Read, parse and try out one key. Raises ConfigError (DkimKeyUnavailable when the
    key is simply not on this machine); never puts key material in a message. A relative
    key_file must stay in the workspace or the ``allowed`` folders (default: the workspace)."""
    where = where or Location("outreach.yaml", None, None, "dkim")
    data, source = _read_key(cfg, root, where, allowed)
    algorithm, private, bits, public = parse_key(data, source, where)
    if bits is not None and bits < MIN_RSA_BITS:
        raise ConfigError(
            f"the DKIM key in {source} has {bits} bits; receivers ignore keys under {MIN_RSA_BITS}",
            location=where,
            hint="make a 2048-bit key: openssl genrsa -out dkim.pem 2048",
        )
    domain = ascii_domain(cfg.domain or organisation_domain)
    key = DkimKey(domain, cfg.selector, algorithm, source, private, bits, public)
    # One trial signature now, so a key dkimpy cannot use fails here and not per message.
    trial = f"From: test@{domain}\r\nSubject: DKIM key check\r\n\r\nok\r\n".encode()
    sign_with(key, trial)
    return key


def _key_field(cfg: Dkim) -> str:
    return "key_env" if cfg.key_env else "key_file"


def _where(doc: YamlDoc | None, settings: Settings, index: int, key: str | None = None) -> Location:
    listed = isinstance(settings.dkim, list)
    path: tuple[str | int, ...] = ("dkim", index) if listed else ("dkim",)
    if key:
        path += (key,)
    if doc is None:
        return Location("outreach.yaml", None, None, dotted_path(path))
    return doc.where(path)


def dkim_problems(settings: Settings, root: Path, doc: YamlDoc | None) -> list[Problem]:
    """What ``outreach check`` says about the DKIM keys: an invalid key is an error; a key
    not present on this machine a warning (``send`` refuses to start without it)."""
    problems: list[Problem] = []
    for i, cfg in enumerate(settings.dkim_keys()):
        where = _where(doc, settings, i, _key_field(cfg))
        try:
            key = load_key(
                cfg, root, settings.organisation.domain, where, settings.allowed_folders(root)
            )
        except DkimKeyUnavailable as exc:
            problems.append(
                Problem(
                    exc.message + ": mail cannot be signed here, and `send` will refuse to start",
                    exc.location,
                    exc.hint,
                    severity="warning",
                )
            )
            continue
        except ConfigError as exc:
            problems.append(Problem(exc.message, exc.location, exc.hint))
            continue
        if key.bits is not None and key.bits < RECOMMENDED_RSA_BITS:
            problems.append(
                Problem(
                    f"the DKIM key has {key.bits} bits; {RECOMMENDED_RSA_BITS} is recommended",
                    where,
                    "make a new key (openssl genrsa -out dkim.pem 2048), publish its record "
                    "under a new selector, then switch",
                    severity="warning",
                )
            )
        if cfg.key_file and os.name == "posix":
            path = Path(cfg.key_file).expanduser()
            path = path if path.is_absolute() else root / path
            try:
                mode = path.stat().st_mode
            except OSError:
                mode = 0
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                problems.append(
                    Problem(
                        f"the DKIM key file {cfg.key_file} can be read by other users "
                        f"(mode {stat.S_IMODE(mode):04o})",
                        where,
                        f"chmod 600 {cfg.key_file}",
                        severity="warning",
                    )
                )
    return problems


def unsigned_senders(
    settings: Settings, senders: Iterable[tuple[str, str, Location]]
) -> list[Problem]:
    """Warn, when DKIM is configured, about senders whose From domain no key covers:
    their mail goes out unsigned and fails DMARC alignment."""
    configs = settings.dkim_keys()
    if not configs:
        return []
    org = settings.organisation.domain
    domains = [ascii_domain(c.domain or org) for c in configs]
    problems = []
    for what, email, where in senders:
        domain = ascii_domain(email.rsplit("@", 1)[-1])
        if not any(domain == d or domain.endswith("." + d) for d in domains):
            problems.append(
                Problem(
                    f"{what} <{email}>: no DKIM key for {domain}, so this mail goes out "
                    "unsigned (DMARC aligns on From)",
                    where,
                    f"add a `dkim:` entry with `domain: {domain}`, or send from an address "
                    f"in {', '.join(sorted(set(domains)))}",
                    severity="warning",
                )
            )
    return problems


def load_keys(settings: Settings, root: Path) -> list[DkimKey]:
    """Every key of ``dkim:`` in outreach.yaml, loaded (a ConfigError names the first bad one)."""
    org = settings.organisation.domain
    return [
        load_key(
            cfg,
            root,
            org,
            _where(None, settings, i, _key_field(cfg)),
            settings.allowed_folders(root),
        )
        for i, cfg in enumerate(settings.dkim_keys())
    ]


def dns_records(settings: Settings, root: Path) -> list[DkimKey]:
    """The loaded keys, for `outreach dkim record` (which prints their public halves)."""
    return load_keys(settings, root)


def sign_with(key: DkimKey, message: bytes, headers: Sequence[bytes] = (b"from",)) -> bytes:
    """``message`` with a DKIM-Signature over ``headers``; a failure names the key's source,
    never its content."""
    dkim = _dkim_module()
    try:
        signature = dkim.sign(
            message,
            key.selector.encode("ascii"),
            key.domain.encode("ascii"),
            key.private,
            canonicalize=CANONICALIZE,
            signature_algorithm=key.algorithm,
            include_headers=list(headers),
            logger=_QUIET,
        )
    except Exception as exc:  # noqa: BLE001 - dkimpy's errors; the key must not leak
        raise ConfigError(
            f"DKIM signing with {key.source} failed ({type(exc).__name__})",
            hint="check the key with `outreach dkim record`; an ed25519 key needs PyNaCl",
        ) from None
    return bytes(signature) + message
