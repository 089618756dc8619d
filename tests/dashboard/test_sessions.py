"""Session cookies, CSRF tokens and login throttling (pure)."""

from __future__ import annotations

from smsrelay.dashboard.sessions import SESSION_SECONDS, LoginThrottle, SessionSigner

KEY = b"k" * 32


def test_a_cookie_reads_back_as_the_session_it_was_issued_for() -> None:
    signer = SessionSigner(KEY)
    session = signer.read(signer.issue(7, 3, now=1000.0), now=1001.0)
    assert session is not None
    assert (session.user_id, session.session_version, session.issued_at) == (7, 3, 1000)


def test_a_tampered_forged_or_expired_cookie_is_no_session() -> None:
    signer = SessionSigner(KEY)
    cookie = signer.issue(7, 3, now=1000.0)
    payload, _, signature = cookie.rpartition(".")
    other_user = "8" + payload[1:]
    assert signer.read(f"{other_user}.{signature}", now=1001.0) is None
    assert signer.read(SessionSigner(b"x" * 32).issue(7, 3, now=1000.0), now=1001.0) is None
    assert signer.read(cookie, now=1000.0 + SESSION_SECONDS + 1) is None
    assert signer.read("garbage", now=1001.0) is None
    assert signer.read(None) is None


def test_a_csrf_token_belongs_to_one_session() -> None:
    signer = SessionSigner(KEY)
    first = signer.read(signer.issue(7, 3, now=1000.0), now=1000.0)
    second = signer.read(signer.issue(7, 3, now=1000.0), now=1000.0)
    assert first is not None and second is not None
    assert signer.check_csrf(first, signer.csrf_token(first))
    assert not signer.check_csrf(first, signer.csrf_token(second))
    assert not signer.check_csrf(first, None)
    assert not signer.check_csrf(first, "")


def test_too_many_failed_logins_from_an_address_make_it_wait_for_the_window() -> None:
    throttle = LoginThrottle(max_failures=3, window_seconds=60)
    for second in range(3):
        assert throttle.retry_after("10.0.0.1", now=100.0 + second) == 0
        throttle.failed("10.0.0.1", now=100.0 + second)
    assert throttle.retry_after("10.0.0.1", now=103.0) == 57.0
    assert throttle.retry_after("10.0.0.2", now=103.0) == 0
    assert throttle.retry_after("10.0.0.1", now=161.0) == 0


def test_a_successful_login_forgets_the_failures() -> None:
    throttle = LoginThrottle(max_failures=2, window_seconds=60)
    throttle.failed("10.0.0.1", now=1.0)
    throttle.succeeded("10.0.0.1")
    throttle.failed("10.0.0.1", now=2.0)
    assert throttle.retry_after("10.0.0.1", now=3.0) == 0
