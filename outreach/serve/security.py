"""What every answer of the web application shares: security headers, who the client is
behind a trusted proxy, signed cookies, CSRF checks and the sign-in rate limit."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from collections import deque
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from itsdangerous import BadSignature, Signer
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# No script at all, nothing from elsewhere: styles and images from the app itself, frames
# only of the app's own previews, and no page of ours inside anyone's frame.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# A rendered message (a preview) or the report: their own inline styles and data: images,
# still no script (sandboxed too), framed only by the desk.
CSP_DOCUMENT = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'; sandbox"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    # a Referer only to ourselves: with none at all Chromium sends `Origin: null` on our own
    # forms, which same_origin() must refuse (the unsubscribe pages send none: NO_REFERRER)
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}
# the unsubscribe URL carries a token: it is never passed on, not even to ourselves
NO_REFERRER = "no-referrer"


class SecurityHeaders:
    """ASGI middleware: every response gets ``HEADERS`` unless it set its own (a preview
    sets its CSP), and ``Cache-Control: no-store`` unless it chose caching (static files)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.defaults = [(k.encode(), v.encode()) for k, v in HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _v in headers}
                headers += [(k, v) for k, v in self.defaults if k not in present]
                if b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


class Proxies:
    """The reverse proxies in front (``serve.trusted_proxies``): only a request whose peer
    is one of them may say, in headers, who the client is and how it came."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]

    def trusts(self, address: str | None) -> bool:
        if not address or not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def peer(self, request: Request) -> str | None:
        return request.client.host if request.client else None

    def from_proxy(self, request: Request) -> bool:
        return self.trusts(self.peer(request))

    def client(self, request: Request) -> str:
        """The client's address: the peer, or behind trusted proxies the last address in
        X-Forwarded-For that is not a proxy of ours (earlier ones the client may forge)."""
        peer = self.peer(request) or "unknown"
        if not self.trusts(peer):
            return peer
        hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",")]
        for hop in reversed([h for h in hops if h]):
            if not self.trusts(hop):
                return hop
        return peer

    def https(self, request: Request) -> bool:
        if self.from_proxy(request):
            proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip()
            if proto:
                return proto.lower() == "https"
        return request.url.scheme == "https"


def derived_key(secret: bytes, purpose: str) -> bytes:
    """A key for one purpose from the workspace secret (cookies must not share the key
    that makes message tokens)."""
    return hmac.new(secret, f"outreach serve: {purpose}".encode(), hashlib.sha256).digest()


class CookieSigner:
    def __init__(self, secret: bytes, purpose: str) -> None:
        self.signer = Signer(derived_key(secret, purpose), salt=purpose)

    def sign(self, value: str) -> str:
        return self.signer.sign(value.encode()).decode()

    def unsign(self, value: str | None) -> str | None:
        if not value or len(value) > 512:
            return None
        try:
            return self.signer.unsign(value.encode()).decode()
        except (BadSignature, UnicodeDecodeError):
            return None


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(expected: str | None, given: Any) -> bool:
    return (
        isinstance(expected, str)
        and isinstance(given, str)
        and bool(expected)
        and hmac.compare_digest(expected.encode(), given.encode())
    )


def same_origin(request: Request, proxies: Proxies) -> bool:
    """A form POST must come from our own pages: when the browser names the Origin (or only
    the Referer), its host must be ours. No header at all (old clients): the CSRF token
    alone decides."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return source is None
    host = request.headers.get("host", "")
    if proxies.from_proxy(request):
        host = request.headers.get("x-forwarded-host", host).split(",")[0].strip()
    return urlsplit(source).netloc.lower() == host.lower()


class LoginLimiter:
    """Failed sign-ins per client address and per user id, in a sliding window; while
    either is over the limit even the right password is refused. Kept in this process
    (with several workers each counts its own); at most ``max_keys`` keys are tracked."""

    WINDOW = 15 * 60

    def __init__(self, attempts: int, max_keys: int = 100_000) -> None:
        self.attempts = attempts
        self.max_keys = max_keys
        self.failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self.failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.WINDOW:
            times.popleft()
        if not times:
            del self.failures[key]
        return times

    def wait(self, *keys: str, now: float | None = None) -> float:
        """Seconds until a sign-in may be tried again (0: now)."""
        now = time.monotonic() if now is None else now
        longest = 0.0
        for key in keys:
            times = self._recent(key, now)
            if len(times) >= self.attempts:
                longest = max(longest, times[-self.attempts] + self.WINDOW - now)
        return longest

    def failed(self, *keys: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if len(self.failures) >= self.max_keys:
            for key in list(self.failures):
                self._recent(key, now)
            if len(self.failures) >= self.max_keys:  # still full: forget the oldest half
                for key in list(self.failures)[: self.max_keys // 2]:
                    del self.failures[key]
        for key in keys:
            self.failures.setdefault(key, deque()).append(now)

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self.failures.pop(key, None)
