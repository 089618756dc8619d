"""The remembered, per-secret-set `Redactor` masks exactly what plain redaction masks."""

from __future__ import annotations

import base64

from hypothesis import example, given, settings
from hypothesis import strategies as st

from smsrelay.connectors.exchange import HttpRequest
from smsrelay.connectors.redaction import (
    Redactor,
    _mask_base64_runs,
    _replace_all,
    _spellings,
    redact_body,
    redact_request,
    redact_text,
)

secret_sets = st.lists(
    st.one_of(
        st.sampled_from(["", "1", "ab", "bench-secret-key", 'p@ss "w/rd"+€', "a&b<c>", "key"]),
        st.text(max_size=10),
    ),
    max_size=3,
)


@st.composite
def texts_with(draw: st.DrawFn, secrets: list[str]) -> str:
    """Texts that hold the secrets in some spelling, as plain text and as base64."""
    parts = draw(st.lists(st.text(max_size=12), max_size=4))
    for secret in secrets:
        if secret and draw(st.booleans()):
            parts.append(secret)
        if secret and draw(st.booleans()):
            parts.append(base64.b64encode(f"user:{secret}".encode()).decode())
    return " ".join(draw(st.permutations(parts)))


def reference_text(text: str, secrets: list[str]) -> str:
    values = tuple(s for s in secrets if s)
    if not values:
        return text
    return _replace_all(_mask_base64_runs(text, values), _spellings(values))


@settings(max_examples=400, deadline=None)
@given(data=st.data(), secrets=secret_sets)
@example(data=None, secrets=["bench-secret-key"])
def test_redact_text_equals_the_plain_replacement(
    data: st.DataObject | None, secrets: list[str]
) -> None:
    samples = ["application/json", "HTTP 200; accepted; 1 id", "Basic dXNlcjpiZW5jaC1zZWNyZXQta2V5"]
    if data is not None:
        samples.append(data.draw(texts_with(secrets)))
    redactor = Redactor(tuple(secrets))
    for text in samples:
        expected = reference_text(text, secrets)
        assert redact_text(text, secrets) == expected
        # a second time from the redactor's memory
        assert redactor.text(text) == expected
        assert redactor.text(text) == expected


@settings(max_examples=300, deadline=None)
@given(data=st.data(), secrets=secret_sets)
def test_redact_body_equals_redact_request(data: st.DataObject, secrets: list[str]) -> None:
    body = data.draw(texts_with(secrets)).encode("utf-8", "surrogatepass")
    request = HttpRequest("POST", "https://x.example/send", (), body)
    assert redact_body(body, secrets) == redact_request(request, {}, extra=secrets).body
