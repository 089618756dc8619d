"""`exchange_detail` (remembered redaction per connector) equals redacting everything anew."""

from __future__ import annotations

import base64
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from smsrelay.connectors.exchange import HttpRequest, HttpResponse
from smsrelay.connectors.redaction import redact_request, redact_text
from smsrelay.dispatch.attempts import TRACE_BODY_BYTES, _clip, exchange_detail

secrets_maps = st.dictionaries(
    st.sampled_from(["api_key", "user", "password"]),
    st.sampled_from(["", "1", "bench-secret-key", 'p@ss "w/rd"+€', "a&b", "0123456789"]),
    max_size=3,
)
tokens = st.sampled_from([None, "", "tok-abc.def", "1"])


def reference(
    request: HttpRequest,
    response: HttpResponse | None,
    elapsed_ms: float,
    secrets: dict[str, str],
    access_token: str | None,
) -> dict[str, Any]:
    """The trace built the plain way: every part through `redact_request`/`redact_text`."""
    hidden = [*secrets.values(), *((access_token,) if access_token else ())]
    shown = redact_request(request, {}, extra=hidden)
    detail: dict[str, Any] = {
        "request": {
            "method": request.method,
            "url": shown.url,
            "headers": [[k, v] for k, v in shown.headers],
            "body": _clip(shown.body),
        },
        "elapsed_ms": round(elapsed_ms, 1),
        "batch_size": max(1, len(request.message_ids)),
    }
    if response is not None:
        detail["response"] = {
            "status": response.status,
            "headers": {k: redact_text(v, hidden) for k, v in response.headers.items()},
            "body": redact_text(_clip(response.body), hidden),
        }
    return detail


@st.composite
def leaky_text(draw: st.DrawFn, secrets: dict[str, str], token: str | None) -> str:
    values = [v for v in (*secrets.values(), token or "") if v]
    parts = draw(st.lists(st.sampled_from(["id", "p1", " ", "ok", "x" * 40, '"']), max_size=4))
    for value in values:
        if draw(st.booleans()):
            parts.append(value)
        if draw(st.booleans()):
            parts.append(base64.b64encode(f"u:{value}".encode()).decode())
    text = "".join(draw(st.permutations(parts)))
    return text * draw(st.sampled_from([1, 1, 200]))  # sometimes longer than the clip


@settings(max_examples=300, deadline=None)
@given(data=st.data(), secrets=secrets_maps, token=tokens, answered=st.booleans())
def test_exchange_detail_equals_plain_redaction(
    data: st.DataObject, secrets: dict[str, str], token: str | None, answered: bool
) -> None:
    def text() -> str:
        return data.draw(leaky_text(secrets, token))

    request = HttpRequest(
        "POST",
        f"https://sms.example.com/send?k={text()}",
        (("Authorization", f"Bearer {text()}"), ("X-Key", text())),
        text().encode(),
        ("m1",),
    )
    response = (
        HttpResponse(200, {"Content-Type": "application/json", "X-Echo": text()}, text().encode())
        if answered
        else None
    )
    for _ in range(2):  # the second time from what was remembered
        assert exchange_detail(
            request, response, elapsed_ms=1.23, secrets=secrets, access_token=token
        ) == reference(request, response, 1.23, secrets, token)


def test_a_long_body_is_clipped_after_redaction() -> None:
    secret = "s3cr3t-value"
    body = (secret + " ") * TRACE_BODY_BYTES
    request = HttpRequest("POST", "https://sms.example.com/send", (), body.encode())
    detail = exchange_detail(request, None, elapsed_ms=0, secrets={"k": secret})
    assert secret not in detail["request"]["body"]
    assert detail["request"]["body"].endswith("…")
