"""First-run set-up of the embedded server: the sandbox connector, default senders, a local key."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from smsrelay.connectors.definition import load_definition
from smsrelay.runtime import Runtime
from smsrelay.sandbox import sandbox_connector_yaml
from smsrelay.store.api_keys import authenticate_api_key, create_api_key
from smsrelay.store.connectors import get_connector, save_connector
from smsrelay.store.database import Database
from smsrelay.store.senders import create_sender, list_senders

log = logging.getLogger("smsrelay.setup")

LOCAL_KEY_FILE = "./smsrelay.local-key"


async def ensure_sandbox_connector(runtime: Runtime, base_url: str) -> None:
    """Create or refresh the `sandbox` connector and, if there are no senders, default senders.

    The sandbox's address is a secret of the connector, refreshed on every start so that a
    changed port or public URL keeps working.
    """
    db, box = runtime.database, runtime.secret_box
    definition = load_definition(sandbox_connector_yaml(base_url))
    current = await get_connector(db, box, definition.name)
    if current is None or current.definition.secrets != definition.secrets:
        await save_connector(db, box, definition)
    if not await list_senders(db):
        for kind in ("transactional", "promotional"):
            await create_sender(
                db,
                name=f"sandbox-{kind[:5]}",
                connector=definition.name,
                sender_id="SMSRLY",
                type=kind,
                is_default=True,
            )
        log.info("created default senders on the sandbox connector")


async def ensure_local_api_key(db: Database, path: str = LOCAL_KEY_FILE) -> str:
    """For the embedded setup: a key named `local`, kept in a 0600 file so `make run` can show it.

    A key in the file that this database does not know (a new database) is replaced.
    """
    file = Path(path)
    if file.is_file():
        plaintext = file.read_text(encoding="utf-8").strip()
        if plaintext and await authenticate_api_key(db, plaintext) is not None:
            return plaintext
    _, plaintext = await create_api_key(db, "local")
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(plaintext + "\n")
    return plaintext
