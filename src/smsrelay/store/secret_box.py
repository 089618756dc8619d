"""Connector secrets at rest: a JSON dict sealed with Fernet, rotatable (MultiFernet).

The first key encrypts; every key decrypts, so a new key is introduced by putting it first
and `reencrypt_all` then moves old blobs onto it. Error messages never contain key material
or plaintext.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from smsrelay.settings import Settings
from smsrelay.store.errors import SecretKeyError

log = logging.getLogger(__name__)

_KEY_HELP = "a Fernet key is 32 url-safe base64-encoded bytes (Fernet.generate_key())"


class SecretBox:
    """Seals and opens secret dicts with the configured keys, newest first."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise SecretKeyError("no secret key configured (SMSRELAY_SECRET_KEYS)")
        fernets: list[Fernet] = []
        for position, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key.strip().encode("ascii")))
            except (ValueError, UnicodeEncodeError):
                raise SecretKeyError(
                    f"secret key #{position} of {len(keys)} is not valid: {_KEY_HELP}"
                ) from None
        self._fernet = MultiFernet(fernets)

    def seal(self, secrets: Mapping[str, str]) -> bytes:
        """Encrypt a secrets dict with the newest key."""
        plaintext = json.dumps(dict(secrets), sort_keys=True, separators=(",", ":"))
        return self._fernet.encrypt(plaintext.encode("utf-8"))

    def open(self, blob: bytes) -> dict[str, str]:
        """Decrypt a sealed secrets dict with whichever configured key sealed it."""
        try:
            plaintext = self._fernet.decrypt(blob)
        except InvalidToken:
            raise SecretKeyError(
                "stored secrets cannot be decrypted with the configured keys; keep the key "
                "they were sealed with in SMSRELAY_SECRET_KEYS (after the new one) until "
                "rotation is done"
            ) from None
        data = json.loads(plaintext)
        if not isinstance(data, dict):
            raise SecretKeyError("stored secrets are not a mapping")
        return {str(k): str(v) for k, v in data.items()}

    def rotate(self, blob: bytes) -> bytes:
        """Re-seal a blob with the newest key (it may have been sealed with any key)."""
        try:
            return self._fernet.rotate(blob)
        except InvalidToken:
            raise SecretKeyError(
                "stored secrets cannot be decrypted with the configured keys"
            ) from None


def generate_secret_key() -> str:
    """A new random Fernet key, as text."""
    return Fernet.generate_key().decode("ascii")


def load_secret_box(settings: Settings) -> SecretBox:
    """The box for the configured keys; without any, the key file (created on first use).

    The key file serves the embedded setup: one key per line, newest first, mode 0600.
    A key file made here on a PostgreSQL database is warned about: other machines' `serve`
    and `worker` processes would each make their own and could not read its secrets.
    """
    if settings.secret_keys:
        return SecretBox(settings.secret_keys)
    path = Path(settings.secret_key_file)
    created = not path.exists()
    box = SecretBox(_read_or_create_key_file(path))
    if created and not settings.is_sqlite:
        log.warning(
            "SMSRELAY_SECRET_KEYS is not set: made a new secret key in %s. Every serve and "
            "worker process on this database must use the same key: set SMSRELAY_SECRET_KEYS "
            "to it (or share the file) before starting others",
            path,
        )
    return box


def _read_or_create_key_file(path: Path) -> list[str]:
    if not path.exists():
        _create_key_file(path)
    try:
        text = path.read_bytes().decode("ascii")
    except OSError as exc:
        raise SecretKeyError(f"cannot read the secret key file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SecretKeyError(f"the secret key file {path} is not ASCII text") from None
    keys = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not keys:
        raise SecretKeyError(f"the secret key file {path} holds no key")
    return keys


def _create_key_file(path: Path) -> None:
    # Written aside and linked into place, so a concurrent reader never sees a half-written
    # file and a concurrent creator loses cleanly (link fails if the name exists).
    draft = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(generate_secret_key() + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
    except OSError as exc:
        raise SecretKeyError(
            f"cannot create the secret key file {path}: {exc.strerror}; "
            "set SMSRELAY_SECRET_KEYS or SMSRELAY_SECRET_KEY_FILE"
        ) from None
    finally:
        draft.unlink(missing_ok=True)
