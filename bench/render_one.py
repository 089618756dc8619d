"""How long rendering takes: one JSON message, one form message, and a 1000-message batch.

Run `python bench/render_one.py` (or `make bench`); prints microseconds per message.
The templates are compiled once, as the dispatcher does; only rendering is timed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from smsrelay.connectors.definition import load_definition
from smsrelay.connectors.exchange import OutboundMessage
from smsrelay.connectors.rendering import (
    CompiledConnector,
    RenderEnvironment,
    compile_connector,
    render_request,
)

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
secrets: {api_key: k3y, subaccount: acme}
"""

TWILIO = """
name: twilio
request:
  url: https://api.twilio.com/2010-04-01/Accounts/{{secret.sid}}/Messages.json
  auth: {type: basic, username: "{{secret.sid}}", password: "{{secret.token}}"}
  body:
    form: {To: "{{to}}", From: "{{sender}}", Body: "{{body}}", StatusCallback: "{{callback_url}}"}
secrets: {sid: AC0123456789abcdef, token: t0ken}
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
  size: 1000
  mode: items
  path: messages
  item: {destination: "{{to}}", text: "{{body}}", clientMessageId: "{{message_id}}"}
secrets: {api_key: k3y, subaccount: acme}
"""


def message(n: int) -> OutboundMessage:
    """A typical transactional message to a distinct recipient."""
    return OutboundMessage(
        message_id=f"01HZX4J8Q{n:09d}",
        to=f"+4915112{n % 1_000_000:06d}",
        body=f'Your code is {n % 10_000:04d}. Do not share it. "ACME" support: +49 30 1234',
        sender="ACME",
    )


def per_call_microseconds(run: Callable[[], object], calls: int) -> float:
    """Best of five timed loops of `calls` runs, in microseconds per run."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            run()
        best = min(best, time.perf_counter() - start)
    return best / calls * 1e6


def render_with(connector: CompiledConnector, messages: Sequence[OutboundMessage]) -> None:
    """Render one request for `messages`."""
    render_request(connector, messages, ENV)


ENV = RenderEnvironment(
    secrets={"api_key": "k3y", "subaccount": "acme", "sid": "AC0123456789abcdef", "token": "t"},
    callback_url="https://relay.example.com/dlr/tok_3fa9c2",
)


def main() -> None:
    """Print µs per rendered message for each shape."""
    single_json = compile_connector(load_definition(EIGHT_BY_EIGHT))
    single_form = compile_connector(load_definition(TWILIO))
    batch_json = compile_connector(load_definition(EIGHT_BY_EIGHT_BATCH))
    one = [message(1)]
    thousand = [message(n) for n in range(1000)]
    for n in range(1000):  # same recipients every loop, as the dispatcher's caches would see
        render_with(single_json, [thousand[n]])

    json_us = per_call_microseconds(lambda: render_with(single_json, one), 20_000)
    form_us = per_call_microseconds(lambda: render_with(single_form, one), 20_000)
    batch_us = per_call_microseconds(lambda: render_with(batch_json, thousand), 20) / 1000
    print(f"JSON single (8x8):              {json_us:7.1f} µs per message")
    print(f"form single (Twilio, basic):    {form_us:7.1f} µs per message")
    print(f"JSON batch of 1000 (8x8 items): {batch_us:7.1f} µs per message")


if __name__ == "__main__":
    main()
