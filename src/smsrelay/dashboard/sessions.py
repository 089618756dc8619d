"""Dashboard sessions: signed cookies, CSRF tokens bound to the session, login throttling.

A session cookie is `user_id.session_version.issued_at.nonce.signature`, HMAC-SHA256 signed
with the key from `store.users.session_signing_key`. It holds no secret, only proof that
this server issued it; the user's `session_version` must still match (logout bumps it).

The CSRF token is an HMAC of the session's nonce under the same key: every form carries it
in a hidden field and every state-changing fetch in the `X-CSRF-Token` header. Before login
there is no session, so the login form uses a double-submit cookie instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass

SESSION_COOKIE = "smsrelay_session"
LOGIN_CSRF_COOKIE = "smsrelay_login_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 7 * 24 * 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class Session:
    """What a valid session cookie says: who, which session version, since when."""

    user_id: int
    session_version: int
    issued_at: int
    nonce: str


class SessionSigner:
    """Issues and checks session cookies and CSRF tokens with one key."""

    def __init__(self, key: bytes, *, max_age: int = SESSION_SECONDS) -> None:
        self._key = key
        self.max_age = max_age

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self, user_id: int, session_version: int, *, now: float | None = None) -> str:
        """A new cookie value for this user."""
        issued = int(now if now is not None else time.time())
        payload = f"{user_id}.{session_version}.{issued}.{secrets.token_urlsafe(12)}"
        return f"{payload}.{self._sign(payload)}"

    def read(self, cookie: str | None, *, now: float | None = None) -> Session | None:
        """The session a cookie carries, or None if it is absent, forged, malformed or old."""
        if not cookie or len(cookie) > 512:
            return None
        payload, _, signature = cookie.rpartition(".")
        if not payload or not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            user_id, version, issued, nonce = payload.split(".")
            session = Session(int(user_id), int(version), int(issued), nonce)
        except ValueError:
            return None
        age = (now if now is not None else time.time()) - session.issued_at
        if not 0 <= age <= self.max_age:
            return None
        return session

    def csrf_token(self, session: Session) -> str:
        """The CSRF token of this session."""
        return self._sign(f"csrf:{session.nonce}")

    def check_csrf(self, session: Session, token: str | None) -> bool:
        """Whether `token` is this session's CSRF token."""
        return bool(token) and hmac.compare_digest(str(token), self.csrf_token(session))


def new_login_csrf() -> str:
    """A random double-submit token for the login form."""
    return secrets.token_urlsafe(24)


def same_token(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two tokens, both present."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


class LoginThrottle:
    """Failed logins per client address in a sliding window; too many and logins wait.

    In memory, per process: with N processes behind a load balancer an address gets N
    times the allowance, still far too few guesses against scrypt-hashed passwords.
    """

    def __init__(self, max_failures: int = 10, window_seconds: float = 300.0) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._failures.get(address)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window_seconds:
            times.popleft()
        if not times:
            del self._failures[address]
        return times

    def retry_after(self, address: str, *, now: float | None = None) -> float:
        """Seconds until this address may try again (0: it may try now)."""
        at = now if now is not None else time.monotonic()
        times = self._recent(address, at)
        if len(times) < self.max_failures:
            return 0.0
        return max(0.0, times[-self.max_failures] + self.window_seconds - at)

    def failed(self, address: str, *, now: float | None = None) -> None:
        """Count a failed login from this address."""
        at = now if now is not None else time.monotonic()
        times = self._failures.setdefault(address, deque())
        times.append(at)
        while len(times) > self.max_failures:
            times.popleft()
        if len(self._failures) > 100_000:  # a flood of addresses: forget the oldest
            oldest = next(iter(self._failures))
            del self._failures[oldest]

    def succeeded(self, address: str) -> None:
        """Forget this address's failures."""
        self._failures.pop(address, None)
