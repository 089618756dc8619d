"""The shipped sandbox connectors validate and describe the sandbox as it really answers."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from smsrelay.connectors.definition import ConnectorDefinition, load_definition
from smsrelay.connectors.paths import compile_value_path
from smsrelay.sandbox.connectors import sandbox_connector_yaml
from smsrelay.sandbox.testing import RunningSandbox

from .conftest import CallbackReceiver


def fill(template: Any, values: dict[str, str]) -> Any:
    """Replace whole-string `{{name}}` templates (all the shipped connectors use)."""
    if isinstance(template, dict):
        return {k: fill(v, values) for k, v in template.items()}
    if isinstance(template, str):
        assert template.startswith("{{") and template.endswith("}}"), template
        return values[template[2:-2].strip()]
    return template


def url_of(definition: ConnectorDefinition) -> str:
    return definition.request.url.replace("{{secret.base_url}}", definition.secrets["base_url"])


@pytest.mark.parametrize(("batch", "name"), [(False, "sandbox"), (True, "sandbox-batch")])
def test_the_shipped_connectors_validate(batch: bool, name: str) -> None:
    definition = load_definition(
        sandbox_connector_yaml("http://127.0.0.1:8000/sandbox", batch=batch)
    )
    assert definition.name == name
    assert definition.secrets == {"base_url": "http://127.0.0.1:8000/sandbox"}
    assert definition.delivery is not None
    assert definition.delivery.match == "provider_id"
    assert (definition.batch is not None) is batch


def test_the_base_url_is_filled_in_safely() -> None:
    odd = 'http://127.0.0.1:9999/a path/"quoted"#x/'
    definition = load_definition(sandbox_connector_yaml(odd))
    assert definition.secrets["base_url"] == odd.rstrip("/")
    text = sandbox_connector_yaml("http://127.0.0.1:9999/sandbox/")
    assert "# The built-in sandbox provider" in text  # comments survive
    assert 'base_url: "http://127.0.0.1:9999/sandbox"' in text


def delivery_verdict(definition: ConnectorDefinition, report: dict[str, Any]) -> tuple[Any, str]:
    d = definition.delivery
    assert d is not None
    status = compile_value_path(d.status).first(report)
    kind = (
        "delivered"
        if status in d.delivered
        else "failed"
        if status in d.failed
        else "pending"
        if status in d.pending
        else "other"
    )
    return compile_value_path(d.message_id).first(report), kind


async def test_the_single_connector_reads_the_sandbox_answers_and_reports(
    sbx: RunningSandbox, client: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    definition = load_definition(sbx.connector_yaml())
    values = {
        "to": "+15005550003",
        "sender": "TXTSMS",
        "body": "hi",
        "message_id": "our-1",
        "callback_url": receiver.url(),
    }
    body = fill(definition.request.body.json_template, values)
    async with client.post(url_of(definition), json=body) as answer:
        assert answer.status == 200
        provider_id = compile_value_path(definition.response.message_id or "").first(
            await answer.json()
        )
    assert provider_id
    sent, delivered = await receiver.wait_for(2)
    assert delivery_verdict(definition, sent.json) == (provider_id, "pending")
    assert delivery_verdict(definition, delivered.json) == (provider_id, "delivered")
    assert definition.delivery is not None and definition.delivery.reason is not None
    assert compile_value_path(definition.delivery.reason).first(delivered.json) is None


async def test_the_batch_connector_aligns_ids_by_position(
    sbx: RunningSandbox, client: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    definition = load_definition(sbx.connector_yaml(batch=True))
    assert definition.batch is not None
    body = fill(
        definition.request.body.json_template, {"sender": "TXTSMS", "callback_url": receiver.url()}
    )
    recipients = ["+15005550006", "+15005550400", "+15005550001"]
    body[definition.batch.path] = [
        fill(definition.batch.item, {"to": to, "body": "hi", "message_id": f"our-{i}"})
        for i, to in enumerate(recipients)
    ]
    async with client.post(url_of(definition), json=body) as answer:
        assert answer.status == 200
        ids = compile_value_path(definition.response.message_id or "").find(await answer.json())
    assert len(ids) == 3 and ids[1] is None and ids[0] and ids[2]
    await receiver.wait_for(2)
    verdicts = {delivery_verdict(definition, c.json) for c in receiver.received}
    assert verdicts == {(ids[0], "delivered"), (ids[2], "failed")}
