"""Provider presets, checked against each provider's own documentation.

For every preset: the exact request it renders (method, URL, headers incl. the auth
scheme, body bytes); the same request sent over a real socket to a local server that reads
it the way the provider does (form, JSON or query) and answers with the provider's
documented response, which `parse_send_response` turns into provider ids; and the
provider's documented delivery reports (a delivered one and a failure) read with
`parse_delivery_callback`. Where an example is quoted, a comment says where it comes from.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web

from smsrelay.connectors.callback_verification import verify_callback
from smsrelay.connectors.definition import ConnectorDefinition
from smsrelay.connectors.delivery import parse_delivery_callback
from smsrelay.connectors.errors import DefinitionError
from smsrelay.connectors.exchange import (
    DeliveryOutcome,
    HttpRequest,
    HttpResponse,
    InboundCallback,
    OutboundMessage,
    SendOutcome,
    SendVerdict,
)
from smsrelay.connectors.presets import (
    UnknownPresetError,
    build_from_preset,
    get_preset,
    list_presets,
    load_preset,
    preset_names,
)
from smsrelay.connectors.rendering import RenderEnvironment, compile_connector, render_request
from smsrelay.connectors.responses import parse_send_response
from smsrelay.dispatch.transport import AiohttpTransport

DELIVERED = DeliveryOutcome.DELIVERED
FAILED = DeliveryOutcome.FAILED
PENDING = DeliveryOutcome.PENDING
ACCEPTED = SendOutcome.ACCEPTED

CALLBACK = "https://relay.example.com/dlr/tok_3fa9"
CALLBACK_FORM = "https%3A%2F%2Frelay.example.com%2Fdlr%2Ftok_3fa9"
BODY = 'Code 4711: "ok" & 5€'
BODY_FORM = "Code+4711%3A+%22ok%22+%26+5%E2%82%AC"
BODY_QUERY = "Code%204711%3A%20%22ok%22%20%26%205%E2%82%AC"
BODY_JSON = 'Code 4711: \\"ok\\" & 5€'

ANNA_ID = "01HZX3K8Q2V9TQ4M7N5P6R8S0A"
BEN_ID = "01HZX3K8Q2V9TQ4M7N5P6R8S0B"
ANNA = OutboundMessage(
    message_id=ANNA_ID,
    to="+4915112345678",
    body=BODY,
    sender="ACME",
    template_id="tpl-9",
    params={"name": "Anna", "otp": "4711"},
)
BEN = OutboundMessage(
    message_id=BEN_ID,
    to="+447700900123",
    body=BODY,
    sender="ACME",
    template_id="tpl-9",
    params={"name": "Ben", "otp": "0815"},
)

JSON = ("Content-Type", "application/json")
FORM = ("Content-Type", "application/x-www-form-urlencoded")

# Example credentials per preset (documentation examples where the provider gives one).
CREDENTIALS: dict[str, dict[str, str]] = {
    "twilio": {"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": "tw-t0ken"},
    # Vonage's OpenAPI examples: api_key abcd1234, api_secret abcdef0123456789
    "vonage": {"api_key": "abcd1234", "api_secret": "abcdef0123456789"},
    "plivo": {"auth_id": "MAXXXXXXXXXXXXXXXXXX", "auth_token": "pl-t0ken"},
    # Sinch docs' example service plan id
    "sinch": {"service_plan_id": "jd63jf88477ll123ab4567cd89012ef3", "api_token": "sn-t0ken"},
    "infobip": {"api_key": "ib-k3y", "base_url": "https://xyz12.api.infobip.com"},
    # 8x8 batch tutorial's subaccount id
    "8x8": {"api_key": "ex-k3y", "subaccount_id": "riders_hq"},
    "8x8-batch": {"api_key": "ex-k3y", "subaccount_id": "riders_hq"},
    "messagebird": {"access_key": "live_mb0123"},
    "telnyx": {"api_key": "KEY0123telnyx"},
    "msg91": {"authkey": "m91-k3y", "template_variables": "name, otp"},
    "textlocal": {"apikey": "tl=k3y&x"},
    "exotel": {"api_key": "exk", "api_token": "ext", "account_sid": "acme1"},
    "gupshup": {"userid": "2000123456", "password": "p@ss word"},
    "bulksms": {"token_id": "bs-id", "token_secret": "bs-secret"},
    "mobtexting": {"access_token": "mt-t0ken"},
}


def build(name: str, **extra: str) -> ConnectorDefinition:
    """The preset built with its example credentials (and any extra values)."""
    return build_from_preset(name, values={**CREDENTIALS[name], **extra})


def render(definition: ConnectorDefinition, *messages: OutboundMessage) -> HttpRequest:
    env = RenderEnvironment(secrets=definition.secrets, callback_url=CALLBACK)
    return render_request(compile_connector(definition), messages, env)


def basic(user: str, password: str) -> tuple[str, str]:
    return ("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())


def answer(
    definition: ConnectorDefinition,
    status: int,
    body: Any,
    count: int = 1,
    content_type: str = "application/json",
) -> SendVerdict:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = HttpResponse(status=status, headers={"Content-Type": content_type}, body=raw)
    return parse_send_response(definition.response, response, count)


def json_callback(document: Any) -> InboundCallback:
    return InboundCallback(
        method="POST",
        url=CALLBACK,
        query=(),
        headers={},
        body=json.dumps(document).encode(),
        content_type="application/json",
    )


def form_callback(fields: Mapping[str, str]) -> InboundCallback:
    return InboundCallback(
        method="POST",
        url=CALLBACK,
        query=(),
        headers={},
        body=urlencode(fields).encode(),
        content_type="application/x-www-form-urlencoded",
    )


def get_callback(fields: Mapping[str, str]) -> InboundCallback:
    query = tuple(fields.items())
    return InboundCallback(
        method="GET", url=CALLBACK + "?" + urlencode(query), query=query, headers={}, body=b""
    )


def reports(
    definition: ConnectorDefinition, callback: InboundCallback
) -> list[tuple[str, DeliveryOutcome, str | None]]:
    assert definition.delivery is not None
    return [
        (r.key, r.outcome, r.recipient)
        for r in parse_delivery_callback(definition.delivery, callback)
    ]


# ---------------------------------------------------------------- the catalogue


EXPECTED_PRESETS = {
    "twilio",
    "vonage",
    "plivo",
    "sinch",
    "infobip",
    "8x8",
    "8x8-batch",
    "messagebird",
    "telnyx",
    "msg91",
    "textlocal",
    "exotel",
    "gupshup",
    "bulksms",
    "mobtexting",
}


def test_at_least_the_twelve_required_providers_are_shipped() -> None:
    assert set(preset_names()) >= EXPECTED_PRESETS
    assert [p.name for p in list_presets()] == sorted(preset_names())


@pytest.mark.parametrize("name", sorted(EXPECTED_PRESETS))
def test_preset_describes_itself_and_asks_only_for_credentials_and_settings(name: str) -> None:
    info = get_preset(name)
    assert info.title and info.description and info.provider_setup and info.notes
    assert info.documentation, "a preset names the documentation it was checked against"
    assert all(v.description for v in info.variables)
    required = {v.name for v in info.variables if v.required}
    # only credentials (and Infobip's account-specific base URL) are required
    assert required == set(CREDENTIALS[name]) - {"template_variables"}
    assert all(v.secret for v in info.variables if v.required and v.kind != "url")
    sender = info.variable("sender")
    assert sender is not None and sender.default == "{{sender}}" and not sender.secret
    assert info.as_dict()["variables"][0]["name"] == info.variables[0].name
    assert "preset:" in load_preset(name) and "connector:" in load_preset(name)


@pytest.mark.parametrize("name", sorted(EXPECTED_PRESETS))
def test_every_declared_variable_is_used_and_credentials_stay_secrets(name: str) -> None:
    info = get_preset(name)
    text = load_preset(name)
    connector_text = text[text.index("\nconnector:") :]
    defaults = " ".join(v.default or "" for v in info.variables)
    for var in info.variables:
        reference = ("{{secret.%s}}" if var.secret else "{{var.%s}}") % var.name
        # used by the connector, or by another variable's default (Sinch's region)
        assert reference in connector_text or reference in defaults, var.name
    definition = build(name)
    exported = json.dumps(definition.export())
    for var in info.variables:
        if var.secret:
            assert definition.secrets[var.name] == CREDENTIALS[name][var.name]
            assert CREDENTIALS[name][var.name] not in exported


PER_REQUEST_CALLBACK = EXPECTED_PRESETS - {"msg91", "gupshup", "bulksms", "mobtexting"}


@pytest.mark.parametrize("name", sorted(EXPECTED_PRESETS))
def test_callback_url_is_sent_per_message_or_the_setup_says_where_to_paste_it(name: str) -> None:
    definition = build(name)
    request = render(definition, ANNA)
    carries_callback = CALLBACK in request.body.decode() or CALLBACK_FORM in request.body.decode()
    if name in PER_REQUEST_CALLBACK:
        assert carries_callback
    else:
        assert not carries_callback
        assert "callback URL" in get_preset(name).provider_setup
    assert definition.delivery is not None


@pytest.mark.parametrize("name", sorted(EXPECTED_PRESETS))
def test_docs_have_a_section_for_every_preset_and_its_variables(name: str) -> None:
    docs = (Path(__file__).parents[2] / "docs" / "presets.md").read_text(encoding="utf-8")
    start = docs.index(f"### {get_preset(name).title} — `{name}`")
    end = docs.find("\n### ", start + 1)
    section = docs[start : end if end != -1 else len(docs)]
    for var in get_preset(name).variables:
        assert f"| `{var.name}` |" in section, var.name
    assert "**At the provider:**" in section and "**Known limits" in section


def test_unknown_preset_lists_the_available_ones() -> None:
    with pytest.raises(UnknownPresetError) as caught:
        build_from_preset("twillio", values={})
    [error] = caught.value.errors
    assert error.path == "preset"
    assert "'twillio'" in error.message and "twilio" in error.message
    with pytest.raises(UnknownPresetError):
        load_preset("../definition")


def test_missing_and_unknown_variables_are_named_with_what_is_accepted() -> None:
    with pytest.raises(DefinitionError) as caught:
        build_from_preset("twilio", values={"account_sid": "AC1", "authtoken": "x"})
    errors = {e.path: e.message for e in caught.value.errors}
    assert set(errors) == {"authtoken", "auth_token"}
    assert errors["auth_token"].startswith("is required: Auth Token")
    assert (
        "accepted: account_sid (required), auth_token (required), sender (optional)"
        in (errors["authtoken"])
    )


def test_an_empty_credential_counts_as_missing() -> None:
    with pytest.raises(DefinitionError) as caught:
        build_from_preset("telnyx", values={"api_key": "  "})
    assert [e.path for e in caught.value.errors] == ["api_key"]


@pytest.mark.parametrize("value", ["{{to}}", "AB$$X", "Moesms_message", "A{{B"])
def test_a_setting_that_would_be_read_as_a_placeholder_is_refused(value: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        build("twilio", sender=value)
    [error] = caught.value.errors
    assert error.path == "sender" and "placeholder" in error.message


def test_credentials_are_kept_verbatim_but_must_be_one_line() -> None:
    definition = build_from_preset(
        "telnyx", values={"api_key": " {{to}} $$x "}
    )  # secrets are never templates
    assert definition.secrets["api_key"] == " {{to}} $$x "
    with pytest.raises(DefinitionError, match="api_key: must be one line"):
        build_from_preset("telnyx", values={"api_key": "a\nb"})


def test_a_choice_outside_the_listed_ones_is_refused() -> None:
    with pytest.raises(DefinitionError, match="region: 'xx' is not one of: us, eu, au, br, ca"):
        build("sinch", region="xx")


def test_the_sinch_region_selects_the_host_unless_a_base_url_is_given() -> None:
    assert render(build("sinch", region="eu"), ANNA).url.startswith(
        "https://eu.sms.api.sinch.com/xms/v1/"
    )
    assert render(build("sinch", region="eu", base_url="proxy.example.net/sinch/"), ANNA).url == (
        "https://proxy.example.net/sinch/xms/v1/jd63jf88477ll123ab4567cd89012ef3/batches"
    )


@pytest.mark.parametrize(
    "base_url",
    ["ftp://x.example.com", "https://x.example.com/?a=1", "https://user@x.example.com", "https://"],
)
def test_a_base_url_must_be_a_plain_http_url(base_url: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        build("twilio", base_url=base_url)
    assert [e.path for e in caught.value.errors] == ["base_url"]


def test_a_fixed_sender_replaces_the_per_message_sender() -> None:
    request = render(build("telnyx", sender="+18445550001"), ANNA)
    assert json.loads(request.body)["from"] == "+18445550001"


def test_connector_name_can_be_chosen_and_is_validated() -> None:
    assert build_from_preset(
        "telnyx", connector_name="us-main", values=CREDENTIALS["telnyx"]
    ).name == ("us-main")
    with pytest.raises(DefinitionError) as caught:
        build_from_preset("telnyx", connector_name="Bad Name", values=CREDENTIALS["telnyx"])
    assert [e.path for e in caught.value.errors] == ["name"]


@pytest.mark.parametrize(
    ("names", "problem"),
    [("name,9lives", "'9lives'"), ("name,name", "twice"), ("mobiles", "mobiles is a name")],
)
def test_msg91_template_variable_names_are_checked(names: str, problem: str) -> None:
    with pytest.raises(DefinitionError, match=problem):
        build("msg91", template_variables=names)


def test_msg91_without_template_variables_sends_only_the_number() -> None:
    request = render(build("msg91", template_variables=""), ANNA)
    assert json.loads(request.body)["recipients"] == [{"mobiles": "4915112345678"}]


# ---------------------------------------------------------------- exact requests
# Each test states the request the provider documents, byte for byte.


def test_twilio_request() -> None:
    # Twilio Messages resource: POST /2010-04-01/Accounts/{AccountSid}/Messages.json,
    # form-encoded To/From/Body/StatusCallback, HTTP Basic AccountSid:AuthToken.
    request = render(build("twilio"), ANNA)
    assert (request.method, request.url) == (
        "POST",
        "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef"
        "/Messages.json",
    )
    assert request.headers == (basic("AC0123456789abcdef0123456789abcdef", "tw-t0ken"), FORM)
    assert (
        request.body
        == (
            f"To=%2B4915112345678&From=ACME&Body={BODY_FORM}&StatusCallback={CALLBACK_FORM}"
        ).encode()
    )


def test_vonage_request() -> None:
    # Vonage SMS OpenAPI: POST https://rest.nexmo.com/sms/json, form fields api_key,
    # api_secret, from, to (digits), text, type, client-ref, callback.
    request = render(build("vonage"), ANNA)
    assert (request.method, request.url) == ("POST", "https://rest.nexmo.com/sms/json")
    assert request.headers == (FORM,)
    assert (
        request.body
        == (
            "api_key=abcd1234&api_secret=abcdef0123456789&from=ACME&to=4915112345678"
            f"&text={BODY_FORM}&type=unicode&client-ref={ANNA_ID}&callback={CALLBACK_FORM}"
        ).encode()
    )
    assert b"type=text" in render(build("vonage", text_type="text"), ANNA).body


def test_plivo_request() -> None:
    # Plivo Send a Message: POST https://api.plivo.com/v1/Account/{auth_id}/Message/,
    # Basic auth_id:auth_token, src, dst (digits), text, url, method.
    request = render(build("plivo"), ANNA)
    assert request.url == "https://api.plivo.com/v1/Account/MAXXXXXXXXXXXXXXXXXX/Message/"
    assert request.headers == (basic("MAXXXXXXXXXXXXXXXXXX", "pl-t0ken"), JSON)
    assert (
        request.body
        == (
            f'{{"src":"ACME","dst":"4915112345678","text":"{BODY_JSON}","url":"{CALLBACK}",'
            '"method":"POST"}'
        ).encode()
    )


def test_sinch_request_batches_recipients_of_one_text() -> None:
    # Sinch Send (batches): POST https://{region}.sms.api.sinch.com/xms/v1/{service_plan_id}/batches,
    # Bearer token, JSON from, to[], body, delivery_report, callback_url.
    definition = build("sinch")
    single = render(definition, ANNA)
    assert single.url == (
        "https://us.sms.api.sinch.com/xms/v1/jd63jf88477ll123ab4567cd89012ef3/batches"
    )
    assert single.headers == (("Authorization", "Bearer sn-t0ken"), JSON)
    assert (
        single.body
        == (
            f'{{"from":"ACME","to":["+4915112345678"],"body":"{BODY_JSON}",'
            f'"delivery_report":"per_recipient","callback_url":"{CALLBACK}"}}'
        ).encode()
    )
    both = render(definition, ANNA, BEN)
    assert json.loads(both.body)["to"] == ["+4915112345678", "+447700900123"]
    assert both.message_ids == (ANNA_ID, BEN_ID)


def test_infobip_request() -> None:
    # Infobip: POST {baseUrl}/sms/2/text/advanced, Authorization: App <key>, messages[] with
    # destinations[].to, from, text, notifyUrl, notifyContentType, callbackData.
    definition = build("infobip")
    request = render(definition, ANNA)
    assert request.url == "https://xyz12.api.infobip.com/sms/2/text/advanced"
    assert request.headers == (
        ("Authorization", "App ib-k3y"),
        ("Accept", "application/json"),
        JSON,
    )
    anna = (
        '{"from":"ACME","destinations":[{"to":"4915112345678"}],'
        f'"text":"{BODY_JSON}","notifyUrl":"{CALLBACK}",'
        f'"notifyContentType":"application/json","callbackData":"{ANNA_ID}"}}'
    )
    assert request.body == f'{{"messages":[{anna}]}}'.encode()
    assert len(json.loads(render(definition, ANNA, BEN).body)["messages"]) == 2


def test_8x8_single_request() -> None:
    # 8x8 Send SMS API: POST https://sms.8x8.com/api/v1/subaccounts/{subAccountId}/messages,
    # Authorization: Bearer {apiKey}, JSON source, destination, text, clientMessageId,
    # encoding, dlrCallbackUrl.
    request = render(build("8x8"), ANNA)
    assert request.url == "https://sms.8x8.com/api/v1/subaccounts/riders_hq/messages"
    assert request.headers == (("Authorization", "Bearer ex-k3y"), JSON)
    assert (
        request.body
        == (
            f'{{"source":"ACME","destination":"+4915112345678","text":"{BODY_JSON}",'
            f'"clientMessageId":"{ANNA_ID}","encoding":"AUTO","dlrCallbackUrl":"{CALLBACK}"}}'
        ).encode()
    )


def test_8x8_batch_request() -> None:
    # 8x8 Send SMS batch: POST .../messages/batch with messages[], template{} and
    # includeMessagesInResponse; up to 10,000 messages per request.
    definition = build("8x8-batch")
    assert definition.batch is not None and definition.batch.size == 10_000
    request = render(definition, ANNA, BEN)
    assert request.url == "https://sms.8x8.com/api/v1/subaccounts/riders_hq/messages/batch"
    assert request.headers == (("Authorization", "Bearer ex-k3y"), JSON)
    template = f'"template":{{"source":"ACME","encoding":"AUTO","dlrCallbackUrl":"{CALLBACK}"}}'
    anna = f'{{"destination":"+4915112345678","text":"{BODY_JSON}","clientMessageId":"{ANNA_ID}"}}'
    ben = f'{{"destination":"+447700900123","text":"{BODY_JSON}","clientMessageId":"{BEN_ID}"}}'
    assert (
        request.body
        == (f'{{{template},"includeMessagesInResponse":true,"messages":[{anna},{ben}]}}').encode()
    )


def test_messagebird_request() -> None:
    # MessageBird SMS API: POST https://rest.messagebird.com/messages,
    # Authorization: AccessKey <key>, JSON originator, recipients, body, reference,
    # reportUrl, datacoding.
    request = render(build("messagebird"), ANNA)
    assert request.url == "https://rest.messagebird.com/messages"
    assert request.headers == (("Authorization", "AccessKey live_mb0123"), JSON)
    assert (
        request.body
        == (
            f'{{"originator":"ACME","recipients":["4915112345678"],"body":"{BODY_JSON}",'
            f'"reference":"{ANNA_ID}","reportUrl":"{CALLBACK}","datacoding":"auto"}}'
        ).encode()
    )


def test_telnyx_request() -> None:
    # Telnyx: POST https://api.telnyx.com/v2/messages, Authorization: Bearer, JSON from, to
    # (E.164 with +), text, webhook_url.
    request = render(build("telnyx"), ANNA)
    assert request.url == "https://api.telnyx.com/v2/messages"
    assert request.headers == (("Authorization", "Bearer KEY0123telnyx"), JSON)
    assert (
        request.body
        == (
            f'{{"from":"ACME","to":"+4915112345678","text":"{BODY_JSON}",'
            f'"webhook_url":"{CALLBACK}"}}'
        ).encode()
    )


def test_msg91_request() -> None:
    # MSG91 Send SMS via Flow: POST https://control.msg91.com/api/v5/flow/, header authkey,
    # JSON with the template id, sender and recipients[{mobiles, VAR...}].
    definition = build("msg91")
    request = render(definition, ANNA, BEN)
    assert request.url == "https://control.msg91.com/api/v5/flow/"
    assert request.headers == (("authkey", "m91-k3y"), ("accept", "application/json"), JSON)
    assert request.body == (
        b'{"template_id":"tpl-9","sender":"ACME","short_url":"0","recipients":['
        b'{"mobiles":"4915112345678","name":"Anna","otp":"4711"},'
        b'{"mobiles":"447700900123","name":"Ben","otp":"0815"}]}'
    )


def test_textlocal_request() -> None:
    # Textlocal send: POST https://api.txtlocal.com/send/ with apikey, numbers, sender,
    # message, receipt_url, custom (form fields).
    request = render(build("textlocal"), ANNA)
    assert request.url == "https://api.txtlocal.com/send/"
    assert request.headers == (FORM,)
    assert (
        request.body
        == (
            f"apikey=tl%3Dk3y%26x&numbers=4915112345678&sender=ACME&message={BODY_FORM}"
            f"&unicode=false&receipt_url={CALLBACK_FORM}&custom={ANNA_ID}"
        ).encode()
    )
    india = render(build("textlocal", base_url="https://api.textlocal.in"), ANNA)
    assert india.url == "https://api.textlocal.in/send/"


def test_exotel_request() -> None:
    # Exotel Send SMS: POST https://<key>:<token>@api.exotel.com/v1/Accounts/<sid>/Sms/send
    # (.json for a JSON answer), form From, To, Body, EncodingType, StatusCallback, CustomField.
    request = render(build("exotel"), ANNA)
    assert request.url == "https://api.exotel.com/v1/Accounts/acme1/Sms/send.json"
    assert request.headers == (basic("exk", "ext"), FORM)
    assert (
        request.body
        == (
            f"From=ACME&To=%2B4915112345678&Body={BODY_FORM}&EncodingType=unicode"
            f"&StatusCallback={CALLBACK_FORM}&CustomField={ANNA_ID}"
        ).encode()
    )


def test_gupshup_request() -> None:
    # Gupshup "Send Messages to Single Number": GET .../GatewayAPI/rest?userid=&password=
    # &send_to=&method=SendMessage&msg=&msg_type=TEXT&auth_scheme=plain&v=1.1&format=text
    request = render(build("gupshup"), ANNA)
    assert request.method == "GET"
    assert request.url == (
        "https://enterprise.smsgupshup.com/GatewayAPI/rest?userid=2000123456"
        "&password=p%40ss%20word&send_to=4915112345678&method=SendMessage"
        f"&msg={BODY_QUERY}&msg_type=TEXT&auth_scheme=plain&v=1.1&format=text&mask=ACME"
    )
    assert (request.headers, request.body) == ((), b"")


def test_bulksms_request() -> None:
    # BulkSMS OpenAPI: POST https://api.bulksms.com/v1/messages?auto-unicode=true, Basic,
    # body = JSON array of SubmissionEntry {to, from, body}.
    request = render(build("bulksms"), ANNA, BEN)
    assert request.url == "https://api.bulksms.com/v1/messages?auto-unicode=true"
    assert request.headers == (basic("bs-id", "bs-secret"), JSON)
    assert (
        request.body
        == (
            f'[{{"to":"+4915112345678","from":"ACME","body":"{BODY_JSON}"}},'
            f'{{"to":"+447700900123","from":"ACME","body":"{BODY_JSON}"}}]'
        ).encode()
    )


def test_mobtexting_request() -> None:
    # Mobtexting SMS API v2: POST https://portal.mobtexting.com/api/v2/sms/send with the
    # access token in the headers; to, message, sender, service, type (U/N/A), custom.
    request = render(build("mobtexting"), ANNA)
    assert request.url == "https://portal.mobtexting.com/api/v2/sms/send"
    assert request.headers == (("Authorization", "Bearer mt-t0ken"), FORM)
    assert (
        request.body
        == (
            f"to=4915112345678&sender=ACME&message={BODY_FORM}&service=T&type=A&custom={ANNA_ID}"
        ).encode()
    )


# ---------------------------------------------------------------- on the wire


@dataclass
class FakeProvider:
    """A local HTTP server that records requests and answers like the provider."""

    url: str = ""
    status: int = 200
    content_type: str = "application/json"
    body: bytes = b"{}"
    received: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        seen: dict[str, Any] = {
            "method": request.method,
            "path": request.path,
            "query": list(request.query.items()),
            "headers": request.headers,
            "raw": raw,
        }
        if request.content_type == "application/x-www-form-urlencoded":
            seen["body"] = {k: v for k, v in (await request.post()).items()}
        elif request.content_type == "application/json":
            seen["body"] = await request.json()
        else:
            seen["body"] = None
        self.received.append(seen)
        return web.Response(status=self.status, body=self.body, content_type=self.content_type)


@pytest.fixture
async def provider() -> AsyncIterator[FakeProvider]:
    fake = FakeProvider()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    fake.url = f"http://{host}:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()


@dataclass(frozen=True)
class Wire:
    """One preset on the wire: what the provider reads, and what it answers."""

    preset: str
    messages: tuple[OutboundMessage, ...]
    method: str
    path: str
    auth: tuple[str, ...]  # ("basic", user, password) | ("bearer", token) | (header, value)
    body: Any  # the body as the provider parses it (form fields or JSON)
    status: int
    answer: Any  # the provider's documented answer (JSON document or text)
    ids: tuple[tuple[str, ...], ...]
    query: tuple[tuple[str, str], ...] = ()


TWILIO_SID = "SM5ef8732a3c49700934481addd5ce1659"
SINCH_BATCH = "01FC66621XXXXX119Z8PMV1QPQ"
MSG91_REQUEST = "5762846b4f8d285d378b4567"

WIRES = [
    Wire(
        "twilio",
        (ANNA,),
        "POST",
        "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json",
        ("basic", "AC0123456789abcdef0123456789abcdef", "tw-t0ken"),
        {"To": "+4915112345678", "From": "ACME", "Body": BODY, "StatusCallback": CALLBACK},
        201,
        # Twilio Message resource, "Create a Message" response (abbreviated)
        {
            "account_sid": "AC0123456789abcdef0123456789abcdef",
            "api_version": "2010-04-01",
            "body": BODY,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": "ACME",
            "num_segments": "1",
            "sid": TWILIO_SID,
            "status": "queued",
            "to": "+4915112345678",
            "uri": f"/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages/{TWILIO_SID}.json",
        },
        ((TWILIO_SID,),),
    ),
    Wire(
        "vonage",
        (ANNA,),
        "POST",
        "/sms/json",
        ("none",),
        {
            "api_key": "abcd1234",
            "api_secret": "abcdef0123456789",
            "from": "ACME",
            "to": "4915112345678",
            "text": BODY,
            "type": "unicode",
            "client-ref": ANNA_ID,
            "callback": CALLBACK,
        },
        200,
        # Vonage SMS OpenAPI, schema SMS with the Message example values
        {
            "message-count": "1",
            "messages": [
                {
                    "to": "447700900000",
                    "message-id": "0A0000000123ABCD1",
                    "status": "0",
                    "remaining-balance": "3.14159265",
                    "message-price": "0.03330000",
                    "network": "12345",
                }
            ],
        },
        (("0A0000000123ABCD1",),),
    ),
    Wire(
        "plivo",
        (ANNA,),
        "POST",
        "/v1/Account/MAXXXXXXXXXXXXXXXXXX/Message/",
        ("basic", "MAXXXXXXXXXXXXXXXXXX", "pl-t0ken"),
        {
            "src": "ACME",
            "dst": "4915112345678",
            "text": BODY,
            "url": CALLBACK,
            "method": "POST",
        },
        202,
        # plivo.com/docs/api/message/ "Send a Message" response (HTTP Status: 202)
        {
            "message": "message(s) queued",
            "message_uuid": ["db3ce55a-7f1d-11e1-8ea7-1231380bc196"],
            "api_id": "db342550-7f1d-11e1-8ea7-1231380bc196",
        },
        (("db3ce55a-7f1d-11e1-8ea7-1231380bc196",),),
    ),
    Wire(
        "sinch",
        (ANNA, BEN),
        "POST",
        "/xms/v1/jd63jf88477ll123ab4567cd89012ef3/batches",
        ("bearer", "sn-t0ken"),
        {
            "from": "ACME",
            "to": ["+4915112345678", "+447700900123"],
            "body": BODY,
            "delivery_report": "per_recipient",
            "callback_url": CALLBACK,
        },
        201,
        # Sinch Send (batches) 201 response: the created batch (abbreviated)
        {
            "id": SINCH_BATCH,
            "to": ["4915112345678", "447700900123"],
            "from": "ACME",
            "canceled": False,
            "body": BODY,
            "type": "mt_text",
            "created_at": "2019-08-24T14:15:22Z",
            "modified_at": "2019-08-24T14:15:22Z",
            "delivery_report": "per_recipient",
            "callback_url": CALLBACK,
        },
        ((SINCH_BATCH,), (SINCH_BATCH,)),
    ),
    Wire(
        "infobip",
        (ANNA, BEN),
        "POST",
        "/sms/2/text/advanced",
        ("App ib-k3y",),
        {
            "messages": [
                {
                    "from": "ACME",
                    "destinations": [{"to": "4915112345678"}],
                    "text": BODY,
                    "notifyUrl": CALLBACK,
                    "notifyContentType": "application/json",
                    "callbackData": ANNA_ID,
                },
                {
                    "from": "ACME",
                    "destinations": [{"to": "447700900123"}],
                    "text": BODY,
                    "notifyUrl": CALLBACK,
                    "notifyContentType": "application/json",
                    "callbackData": BEN_ID,
                },
            ]
        },
        200,
        # Infobip send response: bulkId and messages[] with messageId and status, as in
        # dev.infobip.com "Send SMS response"; PENDING_ACCEPTED as in the v2 examples
        {
            "bulkId": "2034072219640523072",
            "messages": [
                {
                    "to": "4915112345678",
                    "status": {
                        "groupId": 1,
                        "groupName": "PENDING",
                        "id": 26,
                        "name": "PENDING_ACCEPTED",
                        "description": "Message sent to next instance",
                    },
                    "messageId": "2250be2d4219-3af1-78856-aabe-1362af1edfd2",
                },
                {
                    "to": "447700900123",
                    "status": {
                        "groupId": 1,
                        "groupName": "PENDING",
                        "id": 26,
                        "name": "PENDING_ACCEPTED",
                        "description": "Message sent to next instance",
                    },
                    "messageId": "2250be2d4219-3af1-78856-aabe-1362af1edfd3",
                },
            ],
        },
        (
            ("2250be2d4219-3af1-78856-aabe-1362af1edfd2",),
            ("2250be2d4219-3af1-78856-aabe-1362af1edfd3",),
        ),
    ),
    Wire(
        "8x8",
        (ANNA,),
        "POST",
        "/api/v1/subaccounts/riders_hq/messages",
        ("bearer", "ex-k3y"),
        {
            "source": "ACME",
            "destination": "+4915112345678",
            "text": BODY,
            "clientMessageId": ANNA_ID,
            "encoding": "AUTO",
            "dlrCallbackUrl": CALLBACK,
        },
        200,
        # 8x8 SMS API OpenAPI, POST /messages 200 example "response"
        {
            "umid": "bda3d56d-1424-e711-813c-06ed3428fe67",
            "clientMessageId": ANNA_ID,
            "destination": "12025550275",
            "encoding": "GSM7",
            "status": {
                "code": "QUEUED",
                "description": "SMS is accepted and queued for processing",
            },
        },
        (("bda3d56d-1424-e711-813c-06ed3428fe67",),),
    ),
    Wire(
        "8x8-batch",
        (ANNA, BEN),
        "POST",
        "/api/v1/subaccounts/riders_hq/messages/batch",
        ("bearer", "ex-k3y"),
        {
            "template": {"source": "ACME", "encoding": "AUTO", "dlrCallbackUrl": CALLBACK},
            "includeMessagesInResponse": True,
            "messages": [
                {"destination": "+4915112345678", "text": BODY, "clientMessageId": ANNA_ID},
                {"destination": "+447700900123", "text": BODY, "clientMessageId": BEN_ID},
            ],
        },
        200,
        # 8x8 Send SMS batch: batchId, acceptedCount, rejectedCount and, with
        # includeMessagesInResponse, umid/clientMessageId/destination/encoding/status each
        {
            "batchId": "3e09ac86-bd74-5465-851d-1eb5a5fdbb9b",
            "acceptedCount": 2,
            "rejectedCount": 0,
            "messages": [
                {
                    "umid": "9e09ac86-bd74-5465-851d-1eb5a5fdbb9a",
                    "clientMessageId": ANNA_ID,
                    "destination": "+4915112345678",
                    "encoding": "UCS2",
                    "status": {"code": "QUEUED", "description": "SMS is accepted and queued"},
                },
                {
                    "umid": "9e09ac86-bd74-5465-851d-1eb5a5fdbb9c",
                    "clientMessageId": BEN_ID,
                    "destination": "+447700900123",
                    "encoding": "UCS2",
                    "status": {"code": "QUEUED", "description": "SMS is accepted and queued"},
                },
            ],
        },
        (("9e09ac86-bd74-5465-851d-1eb5a5fdbb9a",), ("9e09ac86-bd74-5465-851d-1eb5a5fdbb9c",)),
    ),
    Wire(
        "messagebird",
        (ANNA,),
        "POST",
        "/messages",
        ("AccessKey live_mb0123",),
        {
            "originator": "ACME",
            "recipients": ["4915112345678"],
            "body": BODY,
            "reference": ANNA_ID,
            "reportUrl": CALLBACK,
            "datacoding": "auto",
        },
        201,
        # MessageBird "Send outbound SMS" response example (as copied in the
        # messagebird-async crate's examples/example.json)
        {
            "id": "e8077d803532c0b5937c639b60216938",
            "href": "https://rest.messagebird.com/messages/e8077d803532c0b5937c639b60216938",
            "direction": "mt",
            "type": "sms",
            "originator": "ACME",
            "body": BODY,
            "reference": ANNA_ID,
            "validity": None,
            "gateway": None,
            "typeDetails": {},
            "datacoding": "unicode",
            "mclass": 1,
            "scheduledDatetime": None,
            "createdDatetime": "2016-05-03T14:26:57+00:00",
            "recipients": {
                "totalCount": 1,
                "totalSentCount": 1,
                "totalDeliveredCount": 0,
                "totalDeliveryFailedCount": 0,
                "items": [
                    {
                        "recipient": 4915112345678,
                        "status": "sent",
                        "statusDatetime": "2016-05-03T14:26:57+00:00",
                    }
                ],
            },
        },
        (("e8077d803532c0b5937c639b60216938",),),
    ),
    Wire(
        "telnyx",
        (ANNA,),
        "POST",
        "/v2/messages",
        ("bearer", "KEY0123telnyx"),
        {"from": "ACME", "to": "+4915112345678", "text": BODY, "webhook_url": CALLBACK},
        200,
        # Telnyx message object (as in the delivery-update callback's payload)
        {
            "data": {
                "record_type": "message",
                "direction": "outbound",
                "id": "40385f64-5717-4562-b3fc-2c963f66afa6",
                "type": "SMS",
                "from": {"phone_number": "ACME", "carrier": "", "line_type": ""},
                "to": [
                    {
                        "phone_number": "+4915112345678",
                        "status": "queued",
                        "carrier": "T-MOBILE",
                        "line_type": "Wireless",
                    }
                ],
                "text": BODY,
                "webhook_url": CALLBACK,
                "encoding": "UCS-2",
                "parts": 1,
            }
        },
        (("40385f64-5717-4562-b3fc-2c963f66afa6",),),
    ),
    Wire(
        "msg91",
        (ANNA, BEN),
        "POST",
        "/api/v5/flow/",
        ("authkey", "m91-k3y"),
        {
            "template_id": "tpl-9",
            "sender": "ACME",
            "short_url": "0",
            "recipients": [
                {"mobiles": "4915112345678", "name": "Anna", "otp": "4711"},
                {"mobiles": "447700900123", "name": "Ben", "otp": "0815"},
            ],
        },
        200,
        # MSG91 "Send SMS via FLOW" sample output
        {"message": MSG91_REQUEST, "type": "success"},
        ((MSG91_REQUEST,), (MSG91_REQUEST,)),
    ),
    Wire(
        "textlocal",
        (ANNA,),
        "POST",
        "/send/",
        ("none",),
        {
            "apikey": "tl=k3y&x",
            "numbers": "4915112345678",
            "sender": "ACME",
            "message": BODY,
            "unicode": "false",
            "receipt_url": CALLBACK,
            "custom": ANNA_ID,
        },
        200,
        # Textlocal Send SMS sample response (one recipient)
        {
            "balance": 1162,
            "batch_id": 123456789,
            "cost": 1,
            "num_messages": 1,
            "message": {"num_parts": 1, "sender": "ACME", "content": BODY},
            "receipt_url": CALLBACK,
            "custom": ANNA_ID,
            "messages": [{"id": "1151346216", "recipient": 4915112345678}],
            "status": "success",
        },
        (("1151346216",),),
    ),
    Wire(
        "exotel",
        (ANNA,),
        "POST",
        "/v1/Accounts/acme1/Sms/send.json",
        ("basic", "exk", "ext"),
        {
            "From": "ACME",
            "To": "+4915112345678",
            "Body": BODY,
            "EncodingType": "unicode",
            "StatusCallback": CALLBACK,
            "CustomField": ANNA_ID,
        },
        200,
        # Exotel SMS JSON answer (SMSMessage object, as in the SMS details example)
        {
            "SMSMessage": {
                "Sid": "0f477d60517e6e6a0f6d9a7e9af8630e",
                "AccountSid": "acme1",
                "From": "0XXXXXX4890/ACME",
                "To": "+4915112345678",
                "DateCreated": "2017-03-03 14:14:20",
                "DateUpdated": "2017-03-03 14:14:20",
                "DateSent": None,
                "Body": BODY,
                "Direction": "outbound-api",
                "Uri": "/v1/Accounts/acme1/SMS/Messages/0f477d60517e6e6a0f6d9a7e9af8630e.json",
                "ApiVersion": None,
                "Price": None,
                "Status": "queued",
                "DetailedStatusCode": 21010,
                "DetailedStatus": "PENDING_TO_OPERATOR",
                "SmsUnits": None,
            }
        },
        (("0f477d60517e6e6a0f6d9a7e9af8630e",),),
    ),
    Wire(
        "gupshup",
        (ANNA,),
        "GET",
        "/GatewayAPI/rest",
        ("none",),
        None,
        200,
        # Gupshup text answer "success | <number> | <id>" (id format as in its DLR examples)
        "success | 4915112345678 | 3562707498794989059-328736121207676738",
        (("3562707498794989059-328736121207676738",),),
        query=(
            ("userid", "2000123456"),
            ("password", "p@ss word"),
            ("send_to", "4915112345678"),
            ("method", "SendMessage"),
            ("msg", BODY),
            ("msg_type", "TEXT"),
            ("auth_scheme", "plain"),
            ("v", "1.1"),
            ("format", "text"),
            ("mask", "ACME"),
        ),
    ),
    Wire(
        "bulksms",
        (ANNA, BEN),
        "POST",
        "/v1/messages",
        ("basic", "bs-id", "bs-secret"),
        [
            {"to": "+4915112345678", "from": "ACME", "body": BODY},
            {"to": "+447700900123", "from": "ACME", "body": BODY},
        ],
        201,
        # BulkSMS OpenAPI: 201, "An array of the messages that were created from the request"
        [
            {
                "id": "1001",
                "type": "SENT",
                "from": "ACME",
                "to": "4915112345678",
                "body": BODY,
                "encoding": "UNICODE",
                "numberOfParts": 1,
                "creditCost": 2,
                "submission": {"id": "2-00000000001", "date": "2024-03-01T10:00:00Z"},
                "status": {"id": "ACCEPTED.null", "type": "ACCEPTED", "subtype": None},
            },
            {
                "id": "1002",
                "type": "SENT",
                "from": "ACME",
                "to": "447700900123",
                "body": BODY,
                "encoding": "UNICODE",
                "numberOfParts": 1,
                "creditCost": 2,
                "submission": {"id": "2-00000000001", "date": "2024-03-01T10:00:00Z"},
                "status": {"id": "ACCEPTED.null", "type": "ACCEPTED", "subtype": None},
            },
        ],
        (("1001",), ("1002",)),
        query=(("auto-unicode", "true"),),
    ),
    Wire(
        "mobtexting",
        (ANNA,),
        "POST",
        "/api/v2/sms/send",
        ("bearer", "mt-t0ken"),
        {
            "to": "4915112345678",
            "sender": "ACME",
            "message": BODY,
            "service": "T",
            "type": "A",
            "custom": ANNA_ID,
        },
        200,
        # Mobtexting "sms/send" sample response (abbreviated after the id)
        {
            "status": 200,
            "message": "1 numbers accepted for delivery.",
            "data": [{"id": "b34e35ad-fe34-4a8b-977c-b21cd76cd7d6:1"}],
        },
        (("b34e35ad-fe34-4a8b-977c-b21cd76cd7d6:1",),),
    ),
]


def test_every_preset_has_a_wire_case() -> None:
    assert {w.preset for w in WIRES} == EXPECTED_PRESETS


@pytest.mark.parametrize("wire", WIRES, ids=[w.preset for w in WIRES])
async def test_bytes_on_the_wire_read_as_the_provider_reads_them(
    wire: Wire, provider: FakeProvider
) -> None:
    definition = build(wire.preset, base_url=provider.url)
    request = render(definition, *wire.messages)
    provider.status = wire.status
    if isinstance(wire.answer, str):
        provider.content_type, provider.body = "text/plain", wire.answer.encode()
    else:
        provider.content_type, provider.body = "application/json", json.dumps(wire.answer).encode()

    async with AiohttpTransport(allow_hosts=["127.0.0.1"]) as transport:
        response = await transport.send(request, timeout=10)

    [seen] = provider.received
    assert (seen["method"], seen["path"]) == (wire.method, wire.path)
    assert tuple(seen["query"]) == wire.query
    assert seen["body"] == wire.body
    headers = seen["headers"]
    if wire.auth[0] == "basic":
        credentials = aiohttp.BasicAuth.decode(headers["Authorization"])
        assert (credentials.login, credentials.password) == wire.auth[1:]
    elif wire.auth[0] == "bearer":
        assert headers["Authorization"] == f"Bearer {wire.auth[1]}"
    elif wire.auth[0] == "authkey":
        assert headers["authkey"] == wire.auth[1]
    elif wire.auth[0] == "none":
        assert "Authorization" not in headers
    else:
        assert headers["Authorization"] == wire.auth[0]

    verdict = parse_send_response(definition.response, response, len(wire.messages))
    assert [r.outcome for r in verdict.results] == [ACCEPTED] * len(wire.messages), verdict.summary
    assert tuple(r.provider_ids for r in verdict.results) == wire.ids


# ---------------------------------------------------------------- refused and throttled sends


def test_vonage_200_with_an_error_status_is_refused_and_throttling_is_retried() -> None:
    definition = build("vonage")
    # Vonage SMS OpenAPI, ErrorMessage example: status "2", error-text "Missing to param"
    refused = answer(
        definition,
        200,
        {"message-count": "1", "messages": [{"status": "2", "error-text": "Missing to param"}]},
    )
    assert [(r.outcome, r.error) for r in refused.results] == [
        (SendOutcome.REJECTED, "Missing to param")
    ]
    # x-errors "1": Throttled. You are sending SMS faster than the account limit.
    throttled = answer(
        definition,
        200,
        {"message-count": "1", "messages": [{"status": "1", "error-text": "Throttled"}]},
    )
    assert throttled.results[0].outcome is SendOutcome.RETRY


def test_vonage_long_message_keeps_every_part_id() -> None:
    parts = [
        {"to": "447700900000", "message-id": f"0A000000012{n}ABCD1", "status": "0"}
        for n in range(3)
    ]
    verdict = answer(build("vonage"), 200, {"message-count": "3", "messages": parts})
    assert verdict.results[0].provider_ids == (
        "0A0000000120ABCD1",
        "0A0000000121ABCD1",
        "0A0000000122ABCD1",
    )


def test_textlocal_failure_status_is_refused_with_its_message() -> None:
    # Textlocal error code 7: "Insufficient credits."
    verdict = answer(
        build("textlocal"),
        200,
        {"errors": [{"code": 7, "message": "Insufficient credits."}], "status": "failure"},
    )
    assert [(r.outcome, r.error) for r in verdict.results] == [
        (SendOutcome.REJECTED, "Insufficient credits.")
    ]


def test_msg91_error_type_is_refused() -> None:
    # MSG91 sample error output
    verdict = answer(
        build("msg91"),
        200,
        {"type": "error", "message": "Missing Authentication Key", "code": "106"},
    )
    assert [(r.outcome, r.error) for r in verdict.results] == [
        (SendOutcome.REJECTED, "Missing Authentication Key")
    ]


def test_gupshup_error_line_is_refused_with_its_text() -> None:
    text = 'error | 175 | The "INTERNATIONAL_PHONE" service is disabled for you'
    verdict = answer(build("gupshup"), 200, text.encode(), content_type="text/plain")
    assert verdict.results[0].outcome is SendOutcome.REJECTED
    assert verdict.results[0].error == '175 | The "INTERNATIONAL_PHONE" service is disabled for you'


def test_8x8_rejected_status_refuses_the_message() -> None:
    verdict = answer(
        build("8x8"),
        200,
        {"umid": "u-1", "status": {"code": "REJECTED", "description": "Invalid MSISDN"}},
    )
    assert verdict.results[0].outcome is SendOutcome.REJECTED


def test_8x8_batch_judges_each_message_by_position() -> None:
    verdict = answer(
        build("8x8-batch"),
        200,
        {
            "batchId": "b",
            "acceptedCount": 1,
            "rejectedCount": 1,
            "messages": [
                {"umid": "u-1", "status": {"code": "QUEUED"}},
                {"umid": "u-2", "status": {"code": "REJECTED", "description": "Invalid"}},
            ],
        },
        count=2,
    )
    assert [(r.outcome, r.provider_ids) for r in verdict.results] == [
        (ACCEPTED, ("u-1",)),
        (SendOutcome.REJECTED, ()),
    ]


def test_infobip_rejected_group_refuses_only_that_message() -> None:
    def entry(message_id: str, group: str) -> dict[str, Any]:
        return {"messageId": message_id, "status": {"groupName": group, "name": group + "_X"}}

    verdict = answer(
        build("infobip"),
        200,
        {"bulkId": "b", "messages": [entry("m-1", "PENDING"), entry("m-2", "REJECTED")]},
        count=2,
    )
    assert [r.outcome for r in verdict.results] == [ACCEPTED, SendOutcome.REJECTED]


def test_mobtexting_status_in_the_body_must_be_200() -> None:
    verdict = answer(build("mobtexting"), 200, {"status": 401, "message": "Unauthenticated."})
    assert [(r.outcome, r.error) for r in verdict.results] == [
        (SendOutcome.REJECTED, "Unauthenticated.")
    ]


@pytest.mark.parametrize("name", sorted(EXPECTED_PRESETS))
def test_429_and_5xx_are_retried_and_4xx_refused(name: str) -> None:
    definition = build(name)
    assert answer(definition, 429, {}).results[0].outcome is SendOutcome.RETRY
    assert answer(definition, 503, {}).results[0].outcome is SendOutcome.RETRY
    assert answer(definition, 400, {}).results[0].outcome is SendOutcome.REJECTED


# ---------------------------------------------------------------- delivery reports


def twilio_signature(token: str, url: str, fields: Mapping[str, str]) -> str:
    """Twilio's documented algorithm: HMAC-SHA1 of URL + sorted name/value pairs, base64."""
    data = url + "".join(k + v for k, v in sorted(fields.items()))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def twilio_status(status: str, **extra: str) -> dict[str, str]:
    # Twilio status callback properties: MessageSid, MessageStatus, ErrorCode, plus the
    # standard request properties (AccountSid, From, To, ApiVersion, SmsSid, SmsStatus).
    return {
        "AccountSid": "AC0123456789abcdef0123456789abcdef",
        "ApiVersion": "2010-04-01",
        "From": "ACME",
        "MessageSid": TWILIO_SID,
        "MessageStatus": status,
        "SmsSid": TWILIO_SID,
        "SmsStatus": status,
        "To": "+4915112345678",
        **extra,
    }


def test_twilio_status_callbacks() -> None:
    definition = build("twilio")
    assert reports(definition, form_callback(twilio_status("delivered"))) == [
        (TWILIO_SID, DELIVERED, "+4915112345678")
    ]
    assert reports(definition, form_callback(twilio_status("sent"))) == [
        (TWILIO_SID, PENDING, "+4915112345678")
    ]
    failed = form_callback(twilio_status("undelivered", ErrorCode="30003"))
    assert definition.delivery is not None
    [report] = parse_delivery_callback(definition.delivery, failed)
    assert (report.outcome, report.error_code) == (FAILED, "30003")


def test_twilio_status_callbacks_are_verified_with_the_auth_token() -> None:
    definition = build("twilio")
    assert definition.delivery is not None
    fields = twilio_status("delivered")
    signature = twilio_signature("tw-t0ken", CALLBACK, fields)
    signed = InboundCallback(
        method="POST",
        url=CALLBACK,
        query=(),
        headers={"X-Twilio-Signature": signature},
        body=urlencode(fields).encode(),
        content_type="application/x-www-form-urlencoded",
    )
    assert verify_callback(definition.delivery.verify, signed, definition.secrets).ok
    forged = InboundCallback(
        method="POST",
        url=CALLBACK,
        query=(),
        headers={"X-Twilio-Signature": signature},
        body=urlencode({**fields, "MessageStatus": "failed"}).encode(),
        content_type="application/x-www-form-urlencoded",
    )
    assert not verify_callback(definition.delivery.verify, forged, definition.secrets).ok


def vonage_receipt(status: str, err_code: str) -> dict[str, str]:
    # Vonage SMS OpenAPI, schema DeliveryReceipt with its example values
    return {
        "msisdn": "447700900000",
        "to": "AcmeInc",
        "network-code": "12345",
        "messageId": "0A0000001234567B",
        "price": "0.03330000",
        "status": status,
        "scts": "2001011400",
        "err-code": err_code,
        "api-key": "abcd1234",
        "message-timestamp": "2020-01-01 12:00:00",
    }


def test_vonage_delivery_receipts_by_post_json_and_get() -> None:
    definition = build("vonage")
    assert reports(definition, json_callback(vonage_receipt("delivered", "0"))) == [
        ("0A0000001234567B", DELIVERED, "+447700900000")
    ]
    assert reports(definition, get_callback(vonage_receipt("rejected", "6"))) == [
        ("0A0000001234567B", FAILED, "+447700900000")
    ]
    assert reports(definition, form_callback(vonage_receipt("buffered", "0")))[0][1] is PENDING


def plivo_status(status: str, error_code: str) -> dict[str, str]:
    # Plivo message status callback attributes (form data for method POST)
    return {
        "MessageUUID": "db3ce55a-7f1d-11e1-8ea7-1231380bc196",
        "To": "4915112345678",
        "From": "ACME",
        "Type": "sms",
        "Status": status,
        "Units": "1",
        "TotalRate": "0.0350",
        "TotalAmount": "0.0350",
        "MCC": "262",
        "MNC": "01",
        "ErrorCode": error_code,
        "ParentMessageUUID": "db3ce55a-7f1d-11e1-8ea7-1231380bc196",
        "Sequence": "2",
        "MessageTime": "2024-03-01 10:00:00.000000",
    }


def test_plivo_status_callbacks() -> None:
    definition = build("plivo")
    assert reports(definition, form_callback(plivo_status("delivered", "000"))) == [
        ("db3ce55a-7f1d-11e1-8ea7-1231380bc196", DELIVERED, "+4915112345678")
    ]
    assert reports(definition, form_callback(plivo_status("undelivered", "50")))[0][1] is FAILED
    assert reports(definition, form_callback(plivo_status("sent", "")))[0][1] is PENDING


def test_sinch_per_recipient_reports_narrow_the_batch_id_by_recipient() -> None:
    definition = build("sinch")

    def report(recipient: str, status: str, code: int) -> dict[str, Any]:
        # Sinch recipient delivery report (type recipient_delivery_report_sms)
        return {
            "type": "recipient_delivery_report_sms",
            "batch_id": SINCH_BATCH,
            "recipient": recipient,
            "code": code,
            "status": status,
            "at": "2022-08-30T08:16:08.930Z",
            "operator_status_at": "2022-08-30T08:16:00.000Z",
        }

    assert reports(definition, json_callback(report("4915112345678", "Delivered", 0))) == [
        (SINCH_BATCH, DELIVERED, "+4915112345678")
    ]
    assert reports(definition, json_callback(report("447700900123", "Failed", 402))) == [
        (SINCH_BATCH, FAILED, "+447700900123")
    ]
    assert reports(definition, json_callback(report("447700900123", "Dispatched", 401))) == [
        (SINCH_BATCH, PENDING, "+447700900123")
    ]


def infobip_result(callback_data: str, group: str, name: str, status_id: int) -> dict[str, Any]:
    # Infobip "Receive outbound SMS message report" request sample
    return {
        "bulkId": "BULK-ID-123-xyz",
        "messageId": "MESSAGE-ID-123-xyz",
        "to": "41793026727",
        "sentAt": "2019-11-09T16:00:00.000+0000",
        "doneAt": "2019-11-09T16:00:00.000+0000",
        "smsCount": 1,
        "callbackData": callback_data,
        "price": {"pricePerMessage": 0.01, "currency": "EUR"},
        "status": {
            "groupId": 3,
            "groupName": group,
            "id": status_id,
            "name": name,
            "description": "Message delivered to handset",
        },
        "error": {
            "groupId": 0,
            "groupName": "Ok",
            "id": 0,
            "name": "NO_ERROR",
            "description": "No Error",
            "permanent": False,
        },
    }


def test_infobip_reports_are_matched_by_the_echoed_callback_data() -> None:
    definition = build("infobip")
    assert definition.delivery is not None and definition.delivery.match == "message_id"
    callback = json_callback(
        {
            "results": [
                infobip_result(ANNA_ID, "DELIVERED", "DELIVERED_TO_HANDSET", 5),
                infobip_result(BEN_ID, "UNDELIVERABLE", "UNDELIVERABLE_NOT_DELIVERED", 9),
                infobip_result(ANNA_ID, "DELIVERED", "DELIVERED_TO_OPERATOR", 2),
            ]
        }
    )
    assert reports(definition, callback) == [
        (ANNA_ID, DELIVERED, "+41793026727"),
        (BEN_ID, FAILED, "+41793026727"),
        (ANNA_ID, PENDING, "+41793026727"),
    ]


def eightxeight_receipt(state: str, detail: str, **status: Any) -> dict[str, Any]:
    # 8x8 "Delivery receipts for outbound SMS" sample DLR
    return {
        "namespace": "SMS",
        "eventType": "outbound_message_status_changed",
        "description": "SMS outbound message delivery receipt",
        "payload": {
            "umid": "9e09ac86-bd74-5465-851d-1eb5a5fdbb9a",
            "batchId": "3e09ac86-bd74-5465-851d-1eb5a5fdbb9b",
            "clientMessageId": ANNA_ID,
            "subAccountId": "riders_hq",
            "source": "ACME",
            "destination": "+4915112345678",
            "status": {
                "state": state,
                "detail": detail,
                "timestamp": "2020-02-19T08:22:40.33Z",
                **status,
            },
            "price": {"total": 0.07, "perSms": 0.07, "currency": "EUR"},
            "smsCount": 1,
        },
    }


@pytest.mark.parametrize("name", ["8x8", "8x8-batch"])
def test_8x8_receipts_are_matched_by_client_message_id(name: str) -> None:
    definition = build(name)
    delivered = json_callback(eightxeight_receipt("delivered", "delivered_to_recipient"))
    assert reports(definition, delivered) == [(ANNA_ID, DELIVERED, "+4915112345678")]
    undelivered = json_callback(
        eightxeight_receipt(
            "undelivered", "rejected_by_operator", errorCode=15, errorMessage="Expired"
        )
    )
    assert definition.delivery is not None
    [report] = parse_delivery_callback(definition.delivery, undelivered)
    assert (report.key, report.outcome, report.reason, report.error_code) == (
        ANNA_ID,
        FAILED,
        "rejected_by_operator",
        "15",
    )
    assert definition.delivery.window_hours == 48


def test_messagebird_get_status_reports_are_matched_by_reference() -> None:
    definition = build("messagebird")
    # Bird support article "I am missing my delivery reports": GET ?id=&reference=
    # &recipient=&status=delivered&statusDatetime=
    delivered = {
        "id": "e8077d803532c0b5937c639b60216938",
        "reference": ANNA_ID,
        "recipient": "31612345678",
        "status": "delivered",
        "statusDatetime": "2016-05-03T08:58:10+00:00",
    }
    assert reports(definition, get_callback(delivered)) == [(ANNA_ID, DELIVERED, "+31612345678")]
    failed = {
        **delivered,
        "status": "delivery_failed",
        "statusReason": "unknown subscriber",
        "statusErrorCode": "1",
    }
    assert reports(definition, get_callback(failed)) == [(ANNA_ID, FAILED, "+31612345678")]


def telnyx_event(event_type: str, status: str, errors: list[dict[str, str]]) -> dict[str, Any]:
    # Telnyx "Receiving Webhooks": delivery status payload (message.finalized)
    return {
        "data": {
            "event_type": event_type,
            "id": "4ee8c3a6-4995-4309-a3c6-38e3db9ea4be",
            "occurred_at": "2019-12-09T21:32:14.148+00:00",
            "payload": {
                "completed_at": "2019-12-09T21:32:14.148+00:00",
                "cost": {"amount": "0.0051", "currency": "USD"},
                "direction": "outbound",
                "errors": errors,
                "from": {"carrier": "Telnyx", "line_type": "VoIP", "phone_number": "+18445550001"},
                "id": "40385f64-5717-4562-b3fc-2c963f66afa6",
                "parts": 1,
                "record_type": "message",
                "text": "Hello, World!",
                "to": [
                    {
                        "carrier": "T-Mobile USA",
                        "line_type": "Wireless",
                        "phone_number": "+18665550001",
                        "status": status,
                    }
                ],
                "type": "SMS",
            },
            "record_type": "event",
        },
        "meta": {"attempt": 1, "delivered_to": CALLBACK},
    }


def test_telnyx_webhooks() -> None:
    definition = build("telnyx")
    message = "40385f64-5717-4562-b3fc-2c963f66afa6"
    assert reports(
        definition, json_callback(telnyx_event("message.finalized", "delivered", []))
    ) == [(message, DELIVERED, "+18665550001")]
    assert reports(definition, json_callback(telnyx_event("message.sent", "sent", [])))[0][1] is (
        PENDING
    )
    failed = telnyx_event(
        "message.finalized",
        "delivery_failed",
        [{"code": "40008", "title": "Undeliverable", "detail": "The carrier rejected it"}],
    )
    assert definition.delivery is not None
    [report] = parse_delivery_callback(definition.delivery, json_callback(failed))
    assert (report.outcome, report.error_code, report.reason) == (FAILED, "40008", "Undeliverable")


def test_msg91_webhook_v2_reports_are_narrowed_by_number() -> None:
    definition = build("msg91")
    # MSG91 help "How to use Webhook to get the delivery report": sample response v2,
    # a form field `data` holding a JSON string
    data = [
        {
            "senderId": "ACME",
            "requestId": MSG91_REQUEST,
            "report": [
                {
                    "date": "2024-05-22 10:06:20",
                    "amount": "0.01",
                    "clientid": "",
                    "INMSID": "0",
                    "CRQID": "0",
                    "ctCode": "900",
                    "number": "4915112345678",
                    "credit": "1",
                    "status": "1",
                    "desc": "DELIVERED",
                    "failedReason": "",
                },
                {
                    "date": "2024-05-22 10:06:21",
                    "number": "447700900123",
                    "status": "9",
                    "desc": "NDNC",
                },
            ],
            "userId": "27XXXX",
            "campaignName": "Sendhttp",
        }
    ]
    assert reports(definition, form_callback({"data": json.dumps(data)})) == [
        (MSG91_REQUEST, DELIVERED, "+4915112345678"),
        (MSG91_REQUEST, FAILED, "+447700900123"),
    ]


def test_textlocal_receipts_are_matched_by_custom_id() -> None:
    definition = build("textlocal")
    # Textlocal "Handling Receipts": POST number, status, customID, datetime
    receipt = {
        "number": "4915112345678",
        "status": "D",
        "customID": ANNA_ID,
        "datetime": "2024-03-01 10:00:05",
    }
    assert reports(definition, form_callback(receipt)) == [(ANNA_ID, DELIVERED, "+4915112345678")]
    assert reports(definition, form_callback({**receipt, "status": "U"}))[0][1] is FAILED
    assert reports(definition, form_callback({**receipt, "status": "I"}))[0][1] is FAILED
    assert reports(definition, form_callback({**receipt, "status": "?"}))[0][1] is PENDING


def test_exotel_status_callbacks_are_matched_by_custom_field() -> None:
    definition = build("exotel")
    # Exotel Send SMS: POST callback parameters SmsSid, To, Status, SmsUnits,
    # DetailedStatus, DetailedStatusCode, DateSent, CustomField
    callback = {
        "SmsSid": "0f477d60517e6e6a0f6d9a7e9af8630e",
        "To": "+4915112345678",
        "Status": "sent",
        "SmsUnits": "1",
        "DetailedStatus": "DELIVERED_TO_HANDSET",
        "DetailedStatusCode": "20005",
        "DateSent": "2017-03-03 14:14:25",
        "CustomField": ANNA_ID,
    }
    assert reports(definition, form_callback(callback)) == [(ANNA_ID, DELIVERED, "+4915112345678")]
    failed = {**callback, "Status": "failed_dnd", "DetailedStatus": "FAILED_DND"}
    assert definition.delivery is not None
    [report] = parse_delivery_callback(definition.delivery, form_callback(failed))
    assert (report.outcome, report.reason) == (FAILED, "FAILED_DND")


def test_gupshup_realtime_delivery_reports() -> None:
    definition = build("gupshup")
    # Gupshup "Real Time Delivery Reports": GET ?externalId=%0&deliveredTS=%1&status=%2
    # &cause=%3&phoneNo=%4&errCode=%6&noOfFrags=%7
    report = {
        "externalId": "3562707498794989059-328736121207676738",
        "deliveredTS": "1526347800000",
        "status": "SUCCESS",
        "cause": "SUCCESS",
        "phoneNo": "4915112345678",
        "errCode": "000",
        "noOfFrags": "1",
    }
    assert reports(definition, get_callback(report)) == [
        ("3562707498794989059-328736121207676738", DELIVERED, "+4915112345678")
    ]
    failed = {**report, "status": "FAILURE", "cause": "UNKNOWN_SUBSCRIBER", "errCode": "003"}
    assert definition.delivery is not None
    [parsed] = parse_delivery_callback(definition.delivery, get_callback(failed))
    assert (parsed.outcome, parsed.reason, parsed.error_code) == (
        FAILED,
        "UNKNOWN_SUBSCRIBER",
        "003",
    )
    assert reports(definition, get_callback({**report, "status": "UNKNOWN"}))[0][1] is PENDING


def test_bulksms_webhook_arrays() -> None:
    definition = build("bulksms")

    def message(message_id: str, status_type: str, subtype: str | None) -> dict[str, Any]:
        # BulkSMS OpenAPI, schema Message (what a SENT-scope webhook posts, in an array)
        return {
            "id": message_id,
            "type": "SENT",
            "from": "ACME",
            "to": "4915112345678",
            "body": None,
            "encoding": "UNICODE",
            "numberOfParts": 1,
            "creditCost": 2,
            "submission": {"id": "2-00000000001", "date": "2024-03-01T10:00:00Z"},
            "status": {"id": f"{status_type}.{subtype}", "type": status_type, "subtype": subtype},
            "relatedSentMessageId": None,
            "userSuppliedId": None,
        }

    callback = json_callback(
        [message("1001", "DELIVERED", None), message("1002", "FAILED", "EXPIRED")]
    )
    assert reports(definition, callback) == [
        ("1001", DELIVERED, "+4915112345678"),
        ("1002", FAILED, "+4915112345678"),
    ]
    assert reports(definition, json_callback([])) == []  # the webhook validation call


def test_mobtexting_reports_read_the_dlr_fields() -> None:
    definition = build("mobtexting")
    # Mobtexting DLR pull API record (the fields the webhook payload is composed from)
    record = {
        "id": "b34e35ad-fe34-4a8b-977c-b21cd76cd7d6:1",
        "mobile": "4915112345678",
        "status": "DELIVRD",
        "units": 1,
        "service": "T",
        "custom": ANNA_ID,
        "submitted_at": "2018-07-06 09:57:42",
        "delivered_at": "2018-07-06 21:57:42",
        "sender": "ACME",
    }
    assert reports(definition, json_callback(record)) == [
        ("b34e35ad-fe34-4a8b-977c-b21cd76cd7d6:1", DELIVERED, "+4915112345678")
    ]
    assert reports(definition, json_callback({**record, "status": "AWAITING-DLR"}))[0][1] is PENDING
    assert reports(definition, json_callback({**record, "status": "UNDELIV"}))[0][1] is FAILED
