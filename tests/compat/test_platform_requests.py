"""MoEngage and CleverTap requests are read into messages, or refused field by field (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from smsrelay.compat.clevertap import batch_items, parse_clevertap_message
from smsrelay.compat.inbound import InboundRefused, pick_sender, platform_number
from smsrelay.compat.moengage import parse_moengage_send
from smsrelay.store.senders import Sender

KOLKATA = ZoneInfo("Asia/Kolkata")


def _paths(exc: pytest.ExceptionInfo[InboundRefused]) -> set[str]:
    return {e.path for e in exc.value.errors}


def test_moengage_minimal_request_is_transactional() -> None:
    send = parse_moengage_send(
        {"sender": "TXTSMS", "to": "919812345678", "message": "Hi", "service": "T"}, zone=UTC
    )
    assert (send.to, send.message, send.sender, send.kind) == (
        "919812345678",
        "Hi",
        "TXTSMS",
        "transactional",
    )
    assert send.params == {} and send.send_at is None


def test_moengage_optional_fields_become_params_schedule_and_routing() -> None:
    send = parse_moengage_send(
        {
            "sender": "TXTSMS",
            "to": "919812345678",
            "message": "Sale",
            "service": "p",
            "entity_id": "1101",
            "template_id": "1107",
            "webhook_id": "wh_1",
            "time": "2030-01-02 09:30:00",
            "type": "u",
            "flash": 0,
            "custom": "order-7",
            "port": "9200",
        },
        zone=KOLKATA,
    )
    assert send.kind == "promotional"
    assert (send.entity_id, send.template_id, send.webhook_id) == ("1101", "1107", "wh_1")
    assert send.send_at == datetime(2030, 1, 2, 4, 0, tzinfo=UTC)
    assert send.params == {"type": "U", "flash": "0", "custom": "order-7", "port": "9200"}


def test_moengage_empty_optional_fields_are_absent() -> None:
    send = parse_moengage_send(
        {"to": "919812345678", "message": "x", "entity_id": "", "time": " ", "custom": ""},
        zone=UTC,
    )
    assert send.entity_id is None and send.send_at is None and send.params == {}


def test_moengage_bad_values_are_refused_together() -> None:
    with pytest.raises(InboundRefused) as exc:
        parse_moengage_send(
            {
                "message": "x",
                "service": "X",
                "type": "Q",
                "flash": "2",
                "port": "http",
                "time": "tomorrow",
                "colour": "red",
                "custom": {"a": 1},
            },
            zone=UTC,
        )
    assert exc.value.status == 422
    assert _paths(exc) == {"to", "service", "type", "flash", "port", "time", "colour", "custom"}


def test_clevertap_message_keeps_the_mid_as_a_param() -> None:
    message = parse_clevertap_message(
        {
            "source": "TXTSMS",
            "destination": "+919812345678",
            "text": "Hi",
            "mid": "9999999999.1200000000.1654002362.20220531.0.wzrk_default.-1.",
            "encoding": "auto",
            "template_variables": ["a", 2],
        }
    )
    assert message.params == {
        "encoding": "AUTO",
        "mid": "9999999999.1200000000.1654002362.20220531.0.wzrk_default.-1.",
    }
    assert message.template_variables == ("a", "2")


def test_clevertap_message_errors_carry_the_batch_path() -> None:
    with pytest.raises(InboundRefused) as exc:
        parse_clevertap_message({"text": "x", "encoding": "EBCDIC"}, prefix="msgs[3].")
    assert _paths(exc) == {"msgs[3].destination", "msgs[3].encoding"}


def test_clevertap_batch_items_inherit_the_global_pairs() -> None:
    items = batch_items(
        {"source": "TXTSMS", "webhook_id": "wh_1", "msgs": [{"destination": "1"}, {"source": "X"}]}
    )
    assert items == [
        {"source": "TXTSMS", "webhook_id": "wh_1", "destination": "1"},
        {"source": "X", "webhook_id": "wh_1"},
    ]
    with pytest.raises(InboundRefused):
        batch_items({"msgs": []})
    with pytest.raises(InboundRefused):
        batch_items({"msgs": [{}] * 1001})


def test_platform_numbers_without_plus_are_read_as_international() -> None:
    assert platform_number("919812345678") == "+919812345678"
    assert platform_number("+49 151 12345678") == "+49 151 12345678"
    # Not a valid international number: left for intake, which applies the default region.
    assert platform_number("09812345678", "IN") == "09812345678"


def _sender(name: str, sender_id: str, kind: str, default: bool = False) -> Sender:
    return Sender(
        id=0,
        name=name,
        connector_id=1,
        connector_name="c",
        sender_id=sender_id,
        type=kind,
        is_default=default,
        created_at=datetime(2024, 1, 1, tzinfo=UTC),
    )


def test_the_inbound_sender_picks_a_sender_by_name_then_by_sender_id_and_type() -> None:
    senders = [
        _sender("promo", "TXTSMS", "promotional"),
        _sender("otp", "TXTSMS", "transactional"),
        _sender("TXTSMS", "OTHER", "promotional"),
    ]
    assert pick_sender(senders, "TXTSMS", "transactional") is senders[2]  # the name wins
    assert pick_sender(senders[:2], "TXTSMS", "transactional") is senders[1]
    assert pick_sender(senders[:2], "TXTSMS", "promotional") is senders[0]
    assert pick_sender(senders, "NOPE", "transactional") is None
    assert pick_sender(senders, None, "transactional") is None
