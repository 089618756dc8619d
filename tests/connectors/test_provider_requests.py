"""Real provider send APIs (provider-notes.md §2) as connector definitions, byte for byte.

Each connector is written the way a user would configure it, with the field names from the
provider's documentation; each test states the exact request that goes on the wire for one
message and, where the provider batches, for two messages sharing one request.
"""

from __future__ import annotations

from smsrelay.connectors.definition import load_definition
from smsrelay.connectors.exchange import HttpRequest, OutboundMessage
from smsrelay.connectors.rendering import RenderEnvironment, compile_connector, render_request

CALLBACK = "https://relay.example.com/dlr/tok_3fa9"
CALLBACK_FORM = "https%3A%2F%2Frelay.example.com%2Fdlr%2Ftok_3fa9"
BODY = 'Code 4711: "ok" & 5€'
BODY_FORM = "Code+4711%3A+%22ok%22+%26+5%E2%82%AC"
BODY_QUERY = "Code%204711%3A%20%22ok%22%20%26%205%E2%82%AC"
BODY_JSON = 'Code 4711: \\"ok\\" & 5€'

ANNA = OutboundMessage(
    message_id="msg-1",
    to="+4915112345678",
    body=BODY,
    sender="ACME",
    template_id="tpl-9",
    params={"VAR1": "Anna", "VAR2": "4711"},
)
BEN = OutboundMessage(
    message_id="msg-2",
    to="+447700900123",
    body=BODY,
    sender="ACME",
    template_id="tpl-9",
    params={"VAR1": "Ben", "VAR2": "0815"},
)


def render(document: str, *messages: OutboundMessage) -> HttpRequest:
    """Load, compile and render a connector with its own secrets and the test DLR URL."""
    definition = load_definition(document)
    env = RenderEnvironment(secrets=definition.secrets, callback_url=CALLBACK)
    return render_request(compile_connector(definition), messages, env)


JSON = ("Content-Type", "application/json")
FORM = ("Content-Type", "application/x-www-form-urlencoded")

# ---------------------------------------------------------------- connector documents
TWILIO = """
name: twilio
request:
  method: POST
  url: https://api.twilio.com/2010-04-01/Accounts/{{secret.account_sid}}/Messages.json
  auth: {type: basic, username: "{{secret.account_sid}}", password: "{{secret.auth_token}}"}
  body:
    form:
      To: "{{to}}"
      From: "{{sender}}"
      Body: "{{body}}"
      StatusCallback: "{{callback_url}}"
  phone_format: e164
response:
  success_status: [201]
  message_id: $.sid
secrets: {account_sid: AC0123456789abcdef, auth_token: tw-t0ken}
"""

VONAGE = """
name: vonage
request:
  url: https://rest.nexmo.com/sms/json
  body:
    form:
      api_key: "{{secret.api_key}}"
      api_secret: "{{secret.api_secret}}"
      to: "{{to}}"
      from: "{{sender}}"
      text: "{{body}}"
      type: unicode
      client-ref: "{{message_id}}"
      callback: "{{callback_url}}"
  phone_format: e164_digits
response:
  success_when: {path: "$.messages[0].status", equals: "0"}
  message_id: "$.messages[*]['message-id']"
secrets: {api_key: vk1, api_secret: "vs/2+"}
"""

PLIVO = """
name: plivo
request:
  url: https://api.plivo.com/v1/Account/{{secret.auth_id}}/Message/
  auth: {type: basic, username: "{{secret.auth_id}}", password: "{{secret.auth_token}}"}
  body:
    json: {src: "{{sender}}", dst: "{{to}}", text: "{{body}}", url: "{{callback_url}}"}
  phone_format: e164_digits
batch: {size: 1000, mode: join, path: dst, value: "{{to}}", delimiter: "<"}
response:
  success_status: [202]
  message_id: $.message_uuid[*]
secrets: {auth_id: MAXXXXXXXXXXXXXXXXXX, auth_token: pl-t0ken}
"""

SINCH = """
name: sinch
request:
  url: https://us.sms.api.sinch.com/xms/v1/{{secret.service_plan_id}}/batches
  auth: {type: bearer, token: "{{secret.api_token}}"}
  body:
    json:
      from: "{{sender}}"
      to: ["{{to}}"]
      body: "{{body}}"
      delivery_report: per_recipient
      callback_url: "{{callback_url}}"
batch: {size: 1000, mode: values, path: to, value: "{{to}}"}
response:
  success_status: [201]
  message_id: $.id
secrets: {service_plan_id: plan42, api_token: sn-t0ken}
"""

INFOBIP = """
name: infobip
request:
  url: "{{secret.base_url}}/sms/2/text/advanced"
  headers:
    Authorization: "App {{secret.api_key}}"
    Accept: application/json
  body:
    json: {messages: []}
  phone_format: e164_digits
batch:
  size: 100
  mode: items
  path: messages
  item:
    destinations: [{to: "{{to}}", messageId: "{{message_id}}"}]
    from: "{{sender}}"
    text: "{{body}}"
    notifyUrl: "{{callback_url}}"
    callbackData: "{{message_id}}"
response:
  message_id: $.messages[*].messageId
secrets: {base_url: "https://xyz12.api.infobip.com", api_key: ib-k3y}
"""

EIGHT_BY_EIGHT = """
name: acme-8x8
request:
  url: https://sms.8x8.com/api/v1/subaccounts/{{secret.subaccount}}/messages
  headers: {Authorization: "Bearer {{secret.api_key}}"}
  body:
    json:
      source: "{{sender}}"
      destination: "{{to}}"
      text: "{{body}}"
      clientMessageId: "{{message_id}}"
      encoding: AUTO
      dlrCallbackUrl: "{{callback_url}}"
response:
  message_id: $.umid
secrets: {api_key: ex-k3y, subaccount: acme_sub}
"""

EIGHT_BY_EIGHT_BATCH = """
name: acme-8x8-batch
request:
  url: https://sms.8x8.com/api/v1/subaccounts/{{secret.subaccount}}/messages/batch
  headers: {Authorization: "Bearer {{secret.api_key}}"}
  body:
    json:
      template: {source: "{{sender}}", encoding: AUTO, dlrCallbackUrl: "{{callback_url}}"}
batch:
  size: 10000
  mode: items
  path: messages
  item: {destination: "{{to}}", text: "{{body}}", clientMessageId: "{{message_id}}"}
response:
  message_id: $.messages[*].umid
secrets: {api_key: ex-k3y, subaccount: acme_sub}
"""

TELNYX = """
name: telnyx
request:
  url: https://api.telnyx.com/v2/messages
  auth: {type: bearer, token: "{{secret.api_key}}"}
  body:
    json: {from: "{{sender}}", to: "{{to}}", text: "{{body}}", webhook_url: "{{callback_url}}"}
response:
  message_id: $.data.id
secrets: {api_key: KEYtelnyx}
"""

MSG91_FLOW = """
name: msg91-flow
request:
  url: https://control.msg91.com/api/v5/flow/
  headers: {authkey: "{{secret.authkey}}", accept: application/json}
  body:
    json: {template_id: "{{template_id}}", short_url: "0"}
  phone_format: e164_digits
batch:
  size: 1000
  mode: items
  path: recipients
  item: {mobiles: "{{to}}", VAR1: "$$VAR1", VAR2: "{{params.VAR2}}"}
response:
  message_id: $.message
secrets: {authkey: m91-k3y}
"""

TEXTLOCAL = """
name: textlocal
request:
  url: https://api.txtlocal.com/send/
  body:
    form:
      apikey: "{{secret.apikey}}"
      numbers: "{{to}}"
      sender: "{{sender}}"
      message: "{{body}}"
      unicode: "{{unicode}}"
      receipt_url: "{{callback_url}}"
  phone_format: e164_digits
batch: {size: 500, mode: join, path: numbers, value: "{{to}}", delimiter: ","}
response:
  success_when: {path: $.status, equals: success}
  message_id: $.messages[*].id
secrets: {apikey: "tl=k3y&x"}
"""

EXOTEL = """
name: exotel
request:
  url: https://api.exotel.com/v1/Accounts/{{secret.sid}}/Sms/send.json
  auth: {type: basic, username: "{{secret.api_key}}", password: "{{secret.api_token}}"}
  body:
    form:
      From: "{{sender}}"
      To: "{{to}}"
      Body: "{{body}}"
      EncodingType: unicode
      StatusCallback: "{{callback_url}}"
      CustomField: "{{message_id}}"
response:
  message_id: $.SMSMessage.Sid
secrets: {sid: acme1, api_key: exk, api_token: ext}
"""

GUPSHUP = """
name: gupshup
request:
  method: GET
  url: https://enterprise.smsgupshup.com/GatewayAPI/rest?method=SendMessage
  query:
    userid: "{{secret.userid}}"
    password: "{{secret.password}}"
    send_to: "{{to}}"
    msg: "{{body}}"
    msg_type: UNICODE_TEXT
    v: "1.1"
    format: text
  phone_format: e164_digits
batch: {size: 100, mode: join, path: send_to, value: "{{to}}", delimiter: ","}
secrets: {userid: "2000123456", password: "p@ss word"}
"""

BULKSMS = """
name: bulksms
request:
  url: https://api.bulksms.com/v1/messages
  auth: {type: basic, username: "{{secret.token_id}}", password: "{{secret.token_secret}}"}
  body: {json: []}
batch:
  size: 30000
  mode: items
  path: ""
  item: {to: "{{to}}", from: "{{sender}}", body: "{{body}}", encoding: UNICODE, userSuppliedId: "{{message_id}}"}
response:
  success_status: [201]
  message_id: $[*].id
secrets: {token_id: bs-id, token_secret: bs-secret}
"""

CLICKATELL = """
name: clickatell
request:
  url: https://platform.clickatell.com/messages
  headers:
    Authorization: "{{secret.api_key}}"
    Accept: application/json
  body:
    json: {content: "{{body}}", to: []}
  phone_format: e164_digits
batch: {size: 200, mode: values, path: to, value: "{{to}}"}
response:
  success_status: [202]
  message_id: $.messages[*].apiMessageId
secrets: {api_key: "ck-Raw/Key=="}
"""

CLICKATELL_HTTP = """
name: clickatell-http
request:
  method: GET
  url: https://platform.clickatell.com/messages/http/send
  query: {apiKey: "{{secret.api_key}}", to: "{{to}}", content: "{{body}}"}
  phone_format: e164_digits
secrets: {api_key: "ck-Raw/Key=="}
"""

MESSAGEBIRD = """
name: messagebird
request:
  url: https://rest.messagebird.com/messages
  headers: {Authorization: "AccessKey {{secret.access_key}}"}
  body:
    json:
      originator: "{{sender}}"
      recipients: []
      body: "{{body}}"
      datacoding: auto
      reportUrl: "{{callback_url}}"
  phone_format: e164_digits
batch: {size: 50, mode: values, path: recipients, value: "{{to}}"}
response:
  success_status: [201]
  message_id: $.id
secrets: {access_key: live_mb}
"""

XML_GATEWAY = """
name: xml-gateway
request:
  url: https://sms.example.net/api/submit
  headers: {X-Api-Key: "{{secret.key}}"}
  body:
    raw: '<?xml version="1.0" encoding="UTF-8"?><message><to>{{to}}</to><from>{{sender}}</from><text>{{body}}</text><ref>{{message_id}}</ref></message>'
    content_type: application/xml; charset=utf-8
    escape: xml
secrets: {key: xk}
"""

KALEYRA = """
name: kaleyra
request:
  url: https://api.kaleyra.io/v1/{{secret.sid}}/messages
  headers: {api-key: "{{secret.api_key}}"}
  body:
    form:
      to: "{{to}}"
      sender: "{{sender}}"
      body: "{{body}}"
      ref: "{{message_id}}"
      callback: '{"url":"{{callback_url}}","method":"POST"}'
secrets: {sid: HXAP12, api_key: Akal}
"""

# ---------------------------------------------------------------- one recipient per request


def test_twilio_form_with_basic_auth_and_e164_numbers() -> None:
    request = render(TWILIO, ANNA)
    assert request.method == "POST"
    assert request.url == (
        "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef/Messages.json"
    )
    assert request.headers == (
        ("Authorization", "Basic QUMwMTIzNDU2Nzg5YWJjZGVmOnR3LXQwa2Vu"),
        FORM,
    )
    assert (
        request.body
        == (
            f"To=%2B4915112345678&From=ACME&Body={BODY_FORM}&StatusCallback={CALLBACK_FORM}"
        ).encode()
    )
    assert request.message_ids == ("msg-1",)


def test_vonage_credentials_in_form_body_digits_only_and_literal_unicode_type() -> None:
    request = render(VONAGE, ANNA)
    assert (request.method, request.url) == ("POST", "https://rest.nexmo.com/sms/json")
    assert request.headers == (FORM,)
    assert (
        request.body
        == (
            "api_key=vk1&api_secret=vs%2F2%2B&to=4915112345678&from=ACME"
            f"&text={BODY_FORM}&type=unicode&client-ref=msg-1&callback={CALLBACK_FORM}"
        ).encode()
    )


def test_telnyx_flat_json_with_bearer_auth() -> None:
    request = render(TELNYX, ANNA)
    assert (request.method, request.url) == ("POST", "https://api.telnyx.com/v2/messages")
    assert request.headers == (("Authorization", "Bearer KEYtelnyx"), JSON)
    assert (
        request.body
        == (
            f'{{"from":"ACME","to":"+4915112345678","text":"{BODY_JSON}",'
            f'"webhook_url":"{CALLBACK}"}}'
        ).encode()
    )


def test_8x8_single_send_with_static_bearer_header_and_no_auth() -> None:
    request = render(EIGHT_BY_EIGHT, ANNA)
    assert request.url == "https://sms.8x8.com/api/v1/subaccounts/acme_sub/messages"
    assert request.headers == (("Authorization", "Bearer ex-k3y"), JSON)
    assert (
        request.body
        == (
            f'{{"source":"ACME","destination":"+4915112345678","text":"{BODY_JSON}",'
            f'"clientMessageId":"msg-1","encoding":"AUTO","dlrCallbackUrl":"{CALLBACK}"}}'
        ).encode()
    )


def test_exotel_form_with_basic_auth_json_suffix_and_custom_field() -> None:
    request = render(EXOTEL, ANNA)
    assert request.url == "https://api.exotel.com/v1/Accounts/acme1/Sms/send.json"
    assert request.headers == (("Authorization", "Basic ZXhrOmV4dA=="), FORM)
    assert (
        request.body
        == (
            f"From=ACME&To=%2B4915112345678&Body={BODY_FORM}&EncodingType=unicode"
            f"&StatusCallback={CALLBACK_FORM}&CustomField=msg-1"
        ).encode()
    )


def test_clickatell_http_get_with_api_key_in_query() -> None:
    request = render(CLICKATELL_HTTP, ANNA)
    assert request.method == "GET"
    assert request.url == (
        "https://platform.clickatell.com/messages/http/send"
        f"?apiKey=ck-Raw%2FKey%3D%3D&to=4915112345678&content={BODY_QUERY}"
    )
    assert request.headers == ()
    assert request.body == b""


def test_xml_raw_body_escapes_every_substitution() -> None:
    message = OutboundMessage(
        message_id="id<1>",
        to="+4915112345678",
        body="</text><admin>1</admin> 'x' & \"y\"",
        sender="A&B",
    )
    request = render(XML_GATEWAY, message)
    assert request.headers == (
        ("X-Api-Key", "xk"),
        ("Content-Type", "application/xml; charset=utf-8"),
    )
    assert request.body == (
        b'<?xml version="1.0" encoding="UTF-8"?><message><to>+4915112345678</to>'
        b"<from>A&amp;B</from>"
        b"<text>&lt;/text&gt;&lt;admin&gt;1&lt;/admin&gt; &apos;x&apos; &amp; &quot;y&quot;</text>"
        b"<ref>id&lt;1&gt;</ref></message>"
    )


def test_kaleyra_callback_json_object_inside_a_form_field() -> None:
    """Kaleyra's `callback` is a JSON object serialised into one form field.

    A form body is the right tool: the field template is literal JSON text around
    {{callback_url}}, and form encoding percent-encodes the whole field once, so the provider
    form-decodes exactly `{"url":"<our DLR URL>","method":"POST"}`. This is correct because
    the DLR URL never contains a quote or backslash; a value that can (a message text) would
    need JSON escaping inside form encoding, which neither form nor raw `escape` provide.
    """
    request = render(KALEYRA, ANNA)
    assert request.url == "https://api.kaleyra.io/v1/HXAP12/messages"
    assert request.headers == (("api-key", "Akal"), FORM)
    assert (
        request.body
        == (
            f"to=%2B4915112345678&sender=ACME&body={BODY_FORM}&ref=msg-1&callback="
            "%7B%22url%22%3A%22https%3A%2F%2Frelay.example.com%2Fdlr%2Ftok_3fa9%22"
            "%2C%22method%22%3A%22POST%22%7D"
        ).encode()
    )


# ---------------------------------------------------------------- delimiter-joined recipients


def test_plivo_json_with_basic_auth_one_recipient() -> None:
    request = render(PLIVO, ANNA)
    assert request.url == "https://api.plivo.com/v1/Account/MAXXXXXXXXXXXXXXXXXX/Message/"
    assert request.headers == (
        ("Authorization", "Basic TUFYWFhYWFhYWFhYWFhYWFhYWFg6cGwtdDBrZW4="),
        JSON,
    )
    assert (
        request.body
        == (
            f'{{"src":"ACME","dst":"4915112345678","text":"{BODY_JSON}","url":"{CALLBACK}"}}'
        ).encode()
    )


def test_plivo_batch_joins_destinations_with_less_than() -> None:
    request = render(PLIVO, ANNA, BEN)
    assert (
        request.body
        == (
            f'{{"src":"ACME","dst":"4915112345678<447700900123","text":"{BODY_JSON}",'
            f'"url":"{CALLBACK}"}}'
        ).encode()
    )
    assert request.message_ids == ("msg-1", "msg-2")


def test_textlocal_form_batch_joins_numbers_with_commas() -> None:
    single = render(TEXTLOCAL, ANNA)
    assert single.url == "https://api.txtlocal.com/send/"
    assert single.headers == (FORM,)
    assert (
        single.body
        == (
            f"apikey=tl%3Dk3y%26x&numbers=4915112345678&sender=ACME&message={BODY_FORM}"
            f"&unicode=false&receipt_url={CALLBACK_FORM}"
        ).encode()
    )
    batch = render(TEXTLOCAL, ANNA, BEN)
    assert (
        batch.body
        == (
            "apikey=tl%3Dk3y%26x&numbers=4915112345678%2C447700900123&sender=ACME"
            f"&message={BODY_FORM}&unicode=false&receipt_url={CALLBACK_FORM}"
        ).encode()
    )


def test_gupshup_get_with_credentials_in_query_after_the_url_own_query() -> None:
    single = render(GUPSHUP, ANNA)
    assert single.method == "GET"
    assert single.url == (
        "https://enterprise.smsgupshup.com/GatewayAPI/rest?method=SendMessage"
        "&userid=2000123456&password=p%40ss%20word&send_to=4915112345678"
        f"&msg={BODY_QUERY}&msg_type=UNICODE_TEXT&v=1.1&format=text"
    )
    assert (single.headers, single.body) == ((), b"")
    batch = render(GUPSHUP, ANNA, BEN)
    assert batch.url == (
        "https://enterprise.smsgupshup.com/GatewayAPI/rest?method=SendMessage"
        "&userid=2000123456&password=p%40ss%20word&send_to=4915112345678%2C447700900123"
        f"&msg={BODY_QUERY}&msg_type=UNICODE_TEXT&v=1.1&format=text"
    )


# ---------------------------------------------------------------- arrays of plain strings


def test_sinch_to_array_with_bearer_and_plan_id_in_url() -> None:
    single = render(SINCH, ANNA)
    assert single.url == "https://us.sms.api.sinch.com/xms/v1/plan42/batches"
    assert single.headers == (("Authorization", "Bearer sn-t0ken"), JSON)
    assert (
        single.body
        == (
            f'{{"from":"ACME","to":["+4915112345678"],"body":"{BODY_JSON}",'
            f'"delivery_report":"per_recipient","callback_url":"{CALLBACK}"}}'
        ).encode()
    )
    batch = render(SINCH, ANNA, BEN)
    assert (
        batch.body
        == (
            f'{{"from":"ACME","to":["+4915112345678","+447700900123"],"body":"{BODY_JSON}",'
            f'"delivery_report":"per_recipient","callback_url":"{CALLBACK}"}}'
        ).encode()
    )


def test_messagebird_access_key_header_and_recipients_array() -> None:
    single = render(MESSAGEBIRD, ANNA)
    assert single.url == "https://rest.messagebird.com/messages"
    assert single.headers == (("Authorization", "AccessKey live_mb"), JSON)
    assert (
        single.body
        == (
            f'{{"originator":"ACME","recipients":["4915112345678"],"body":"{BODY_JSON}",'
            f'"datacoding":"auto","reportUrl":"{CALLBACK}"}}'
        ).encode()
    )
    batch = render(MESSAGEBIRD, ANNA, BEN)
    assert (
        batch.body
        == (
            f'{{"originator":"ACME","recipients":["4915112345678","447700900123"],'
            f'"body":"{BODY_JSON}","datacoding":"auto","reportUrl":"{CALLBACK}"}}'
        ).encode()
    )


def test_clickatell_rest_raw_key_authorization_and_to_array() -> None:
    single = render(CLICKATELL, ANNA)
    assert single.url == "https://platform.clickatell.com/messages"
    assert single.headers == (
        ("Authorization", "ck-Raw/Key=="),
        ("Accept", "application/json"),
        JSON,
    )
    assert single.body == f'{{"content":"{BODY_JSON}","to":["4915112345678"]}}'.encode()
    batch = render(CLICKATELL, ANNA, BEN)
    assert (
        batch.body
        == (f'{{"content":"{BODY_JSON}","to":["4915112345678","447700900123"]}}').encode()
    )


# ---------------------------------------------------------------- per-message objects


def test_infobip_app_key_base_url_secret_and_nested_destinations() -> None:
    single = render(INFOBIP, ANNA)
    assert single.url == "https://xyz12.api.infobip.com/sms/2/text/advanced"
    assert single.headers == (
        ("Authorization", "App ib-k3y"),
        ("Accept", "application/json"),
        JSON,
    )
    anna = (
        '{"destinations":[{"to":"4915112345678","messageId":"msg-1"}],"from":"ACME",'
        f'"text":"{BODY_JSON}","notifyUrl":"{CALLBACK}","callbackData":"msg-1"}}'
    )
    ben = (
        '{"destinations":[{"to":"447700900123","messageId":"msg-2"}],"from":"ACME",'
        f'"text":"{BODY_JSON}","notifyUrl":"{CALLBACK}","callbackData":"msg-2"}}'
    )
    assert single.body == f'{{"messages":[{anna}]}}'.encode()
    batch = render(INFOBIP, ANNA, BEN)
    assert batch.body == f'{{"messages":[{anna},{ben}]}}'.encode()


def test_8x8_batch_has_a_global_template_and_a_messages_list() -> None:
    template = f'"template":{{"source":"ACME","encoding":"AUTO","dlrCallbackUrl":"{CALLBACK}"}}'
    anna = f'{{"destination":"+4915112345678","text":"{BODY_JSON}","clientMessageId":"msg-1"}}'
    ben = f'{{"destination":"+447700900123","text":"{BODY_JSON}","clientMessageId":"msg-2"}}'
    single = render(EIGHT_BY_EIGHT_BATCH, ANNA)
    assert single.url == "https://sms.8x8.com/api/v1/subaccounts/acme_sub/messages/batch"
    assert single.headers == (("Authorization", "Bearer ex-k3y"), JSON)
    assert single.body == f'{{{template},"messages":[{anna}]}}'.encode()
    batch = render(EIGHT_BY_EIGHT_BATCH, ANNA, BEN)
    assert batch.body == f'{{{template},"messages":[{anna},{ben}]}}'.encode()
    assert batch.message_ids == ("msg-1", "msg-2")


def test_msg91_flow_authkey_header_template_id_and_recipient_variables() -> None:
    single = render(MSG91_FLOW, ANNA)
    assert single.url == "https://control.msg91.com/api/v5/flow/"
    assert single.headers == (("authkey", "m91-k3y"), ("accept", "application/json"), JSON)
    assert single.body == (
        b'{"template_id":"tpl-9","short_url":"0",'
        b'"recipients":[{"mobiles":"4915112345678","VAR1":"Anna","VAR2":"4711"}]}'
    )
    batch = render(MSG91_FLOW, ANNA, BEN)
    assert batch.body == (
        b'{"template_id":"tpl-9","short_url":"0","recipients":['
        b'{"mobiles":"4915112345678","VAR1":"Anna","VAR2":"4711"},'
        b'{"mobiles":"447700900123","VAR1":"Ben","VAR2":"0815"}]}'
    )


def test_bulksms_body_is_a_root_array_of_submissions() -> None:
    anna = (
        f'{{"to":"+4915112345678","from":"ACME","body":"{BODY_JSON}","encoding":"UNICODE",'
        '"userSuppliedId":"msg-1"}'
    )
    ben = (
        f'{{"to":"+447700900123","from":"ACME","body":"{BODY_JSON}","encoding":"UNICODE",'
        '"userSuppliedId":"msg-2"}'
    )
    single = render(BULKSMS, ANNA)
    assert single.url == "https://api.bulksms.com/v1/messages"
    assert single.headers == (("Authorization", "Basic YnMtaWQ6YnMtc2VjcmV0"), JSON)
    assert single.body == f"[{anna}]".encode()
    assert render(BULKSMS, ANNA, BEN).body == f"[{anna},{ben}]".encode()
