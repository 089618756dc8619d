"""Fuzzing: the API against its own OpenAPI document, the definition loader, the DLR intake.

- schemathesis drives every `/v1` operation of a running server (with an API key) from
  `/openapi.json`: no answer may be a 500, and every answer must match what the document
  says (status, content type, body schema). Outbound requests go to an in-memory transport,
  so whatever connectors the fuzzer creates, nothing leaves the process.
  SMSRELAY_FUZZ_EXAMPLES, SMSRELAY_FUZZ_PHASES and SMSRELAY_FUZZ_SEED widen a run.
- hypothesis feeds the definition loader arbitrary text, YAML and mutated definitions: the
  only error it may raise is DefinitionError (field-level, for the user).
- hypothesis posts arbitrary bodies and content types to the DLR intake: the only answers
  are 200, 401, 404 and 413, never a 500.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import Gateway, running_gateway
from smsrelay.connectors.definition import load_definition
from smsrelay.connectors.errors import DefinitionError
from smsrelay.connectors.exchange import HttpRequest, HttpResponse
from smsrelay.dispatch.transport import InMemoryTransport
from smsrelay.sandbox import sandbox_connector_yaml

FUZZ_EXAMPLES = os.environ.get("SMSRELAY_FUZZ_EXAMPLES", "10")
FUZZ_PHASES = os.environ.get("SMSRELAY_FUZZ_PHASES", "examples,fuzzing")
FUZZ_SEED = os.environ.get("SMSRELAY_FUZZ_SEED", "20240601")
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    ]
)


def provider_in_memory(request: HttpRequest) -> HttpResponse:
    """Every outbound request (send, token, webhook) answered at once, in memory."""
    body = {"id": "fuzz-1", "access_token": "fuzz-token", "expires_in": 3600}
    return HttpResponse(200, {"Content-Type": "application/json"}, json.dumps(body).encode())


async def test_every_v1_operation_matches_its_openapi_document_and_never_500s(
    sqlite_url: str, tmp_path: Path
) -> None:
    schemathesis = Path(sys.executable).parent / "schemathesis"
    if not schemathesis.exists():
        pytest.fail("schemathesis is not installed: pip install -e '.[test]'", pytrace=False)
    transport = InMemoryTransport(provider_in_memory)
    async with running_gateway(sqlite_url, tmp_path, transport=transport) as gw:
        process = await asyncio.create_subprocess_exec(
            str(schemathesis),
            "run",
            f"{gw.base_url}/openapi.json",
            "--header",
            f"Authorization: Bearer {gw.api_key}",
            "--include-path-regex",
            "^/v1/",
            "--max-examples",
            FUZZ_EXAMPLES,
            "--phases",
            FUZZ_PHASES,
            "--checks",
            CHECKS,
            "--seed",
            FUZZ_SEED,
            "--workers",
            "2",
            "--request-timeout",
            "30",
            "--output-sanitize",
            "true",
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"},
        )
        output, _ = await asyncio.wait_for(process.communicate(), timeout=300)
    report = output.decode("utf-8", "replace")
    assert process.returncode == 0, report[-12000:]
    assert "passed" in report and "Tested: " in report, report[-3000:]


# ---------------------------------------------------------------- the definition loader

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID = yaml.safe_load(sandbox_connector_yaml("http://127.0.0.1:8000/sandbox"))

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["{{to}}", "{{body}}", "{{secret.x}}", "$.id", "re:(", "2xx", "POST", ""]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)

yaml_tricks = st.sampled_from(
    [
        "!!python/object/apply:os.system ['echo pwned']",
        "a: &a [1, 2]\nb: *a\n",
        "? [a, b]\n: c\n",
        "name: x\nrequest: {url: !!binary aGVsbG8=}\n",
        "%YAML 1.1\n---\nname: x\n",
        "- - - - - - - - - - x",
        "name: 2024-01-01\nrequest: {url: 12}\n",
        "{{to}}",
        "\x00\x01",
        "\ud800",
    ]
)


def mutate(document: Any, path: list[Any], value: Any) -> Any:
    """`document` with the node at `path` (indices wrap) replaced by `value`."""
    if not path or not isinstance(document, dict | list) or not document:
        return value
    mutated = copy.copy(document)
    if isinstance(mutated, dict):
        key = list(mutated)[path[0] % len(mutated)]
        mutated[key] = mutate(mutated[key], path[1:], value)
    else:
        index = path[0] % len(mutated)
        mutated[index] = mutate(mutated[index], path[1:], value)
    return mutated


def loads_or_refuses(text: str) -> None:
    try:
        load_definition(text)
    except DefinitionError as exc:
        assert exc.errors, "a DefinitionError says what is wrong"
        for error in exc.errors:
            assert isinstance(error.path, str) and isinstance(error.message, str)


@FUZZ
@given(st.text(max_size=300) | yaml_tricks)
def test_arbitrary_text_loads_or_raises_definition_error(text: str) -> None:
    loads_or_refuses(text)


@pytest.mark.parametrize("text", ["{" * 3000, "[" * 3000, "a: " + "[" * 3000, '{"a":' * 3000])
def test_deeply_nested_documents_are_refused_as_definition_errors(text: str) -> None:
    with pytest.raises(DefinitionError) as refused:
        load_definition(text)
    assert "nested too deeply" in str(refused.value.errors)


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_as_text_load_or_raise_definition_error(data: bytes) -> None:
    loads_or_refuses(data.decode("utf-8", "surrogateescape"))


@FUZZ
@given(st.lists(st.integers(min_value=0, max_value=50), max_size=5), json_values, st.booleans())
def test_mutated_definitions_load_or_raise_definition_error(
    path: list[int], value: Any, as_yaml: bool
) -> None:
    document = mutate(VALID, path, value)
    text = yaml.safe_dump(document) if as_yaml else json.dumps(document)
    loads_or_refuses(text)


def test_a_yaml_alias_bomb_is_refused_quickly() -> None:
    # 10**9 strings from 1 KB of YAML, inside a JSON body template (any value is allowed
    # there, and compiling the templates would walk every one of them).
    anchors = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, 9):
        items = ", ".join([f"*a{level - 1}"] * 10)
        anchors.append(f"a{level}: &a{level} [{items}]")
    text = "name: bomb\nrequest:\n  url: https://x.example/\n  body:\n    json:\n"
    text += "      to: '{{to}}'\n      text: '{{body}}'\n"
    text += "\n".join("      " + line for line in anchors)
    started = time.monotonic()
    with pytest.raises(DefinitionError) as refused:
        load_definition(text)
    assert time.monotonic() - started < 5
    assert "alias" in str(refused.value.errors)


# ---------------------------------------------------------------- the DLR intake

content_types = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=utf-16",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "multipart/form-data; boundary=xyz",
        "text/xml",
        "text/plain; charset=nonsense",
        "application/octet-stream",
        "\x7f/\x00",
    ]
)
bodies = (
    st.binary(max_size=2000)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.sampled_from(
        [
            b"--xyz\r\nContent-Disposition: form-data; name=id\r\n\r\nm-1\r\n--xyz--\r\n",
            b"id=1&status=delivered&status=failed",
            b"<?xml version='1.0'?><!DOCTYPE a [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><a>&e;</a>",
            b"[" * 5000,
            b"x" * 70_000,
        ]
    )
)


@pytest.fixture(scope="module")
def dlr_gateway(
    sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Any:  # a running gateway shared by the hypothesis examples, in its own thread
    import shutil
    import threading

    workdir = tmp_path_factory.mktemp("dlr-fuzz")
    path = workdir / "smsrelay.db"
    shutil.copyfile(sqlite_template, path)
    ready: dict[str, Any] = {}
    started, stop = threading.Event(), threading.Event()

    async def serve() -> None:
        async with running_gateway(
            f"sqlite+aiosqlite:///{path}", workdir, dlr_max_bytes=64 * 1024
        ) as gw:
            ready["gateway"] = gw
            ready["paths"] = await dlr_paths(gw)
            started.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(60), "the gateway did not start"
    yield ready
    stop.set()
    thread.join(30)


async def dlr_paths(gw: Gateway) -> dict[str, str]:
    """DLR paths of the sandbox connector (no verification) and of an HMAC-verified one."""
    document = yaml.safe_load(sandbox_connector_yaml(gw.base_url + "/sandbox"))
    document["name"] = "verified"
    document["delivery"]["verify"] = {"type": "hmac", "header": "X-Sig", "secret": "{{secret.k}}"}
    document["secrets"]["k"] = "hmac-key"
    saved = await gw.client.put("/v1/connectors/verified", json=document)
    assert saved.status_code == 200, saved.text
    plain = (await gw.client.get("/v1/connectors/sandbox")).json()["callback_url"]
    return {
        "plain": httpx.URL(plain).path,
        "verified": httpx.URL(saved.json()["callback_url"]).path,
        "unknown": "/dlr/not-a-token",
    }


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=bodies,
    content_type=content_types,
    target=st.sampled_from(["plain", "verified", "unknown"]),
    method=st.sampled_from(["POST", "GET"]),
    query=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
)
def test_dlr_intake_answers_only_200_401_404_413(
    dlr_gateway: dict[str, Any],
    body: bytes,
    content_type: str | None,
    target: str,
    method: str,
    query: dict[str, str],
) -> None:
    gw: Gateway = dlr_gateway["gateway"]
    headers = {"Content-Type": content_type} if content_type else {}
    with httpx.Client(base_url=gw.base_url, timeout=30) as client:
        try:
            answer = client.request(
                method,
                dlr_gateway["paths"][target],
                params=query,
                content=body if method == "POST" else None,
                headers=headers,
            )
        except httpx.LocalProtocolError:
            return  # the client itself refused to send it (a header it cannot encode)
    expected = {"plain": {200, 413}, "verified": {401, 413}, "unknown": {404}}[target]
    assert answer.status_code in expected, (answer.status_code, answer.text[:300])
