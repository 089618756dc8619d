"""Connector secrets are sealed with Fernet keys and can move to a new key."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from smsrelay.settings import Settings
from smsrelay.store.errors import SecretKeyError
from smsrelay.store.secret_box import SecretBox, generate_secret_key, load_secret_box


def test_sealed_secrets_open_to_the_same_dict_and_hide_the_plaintext() -> None:
    box = SecretBox([generate_secret_key()])
    blob = box.seal({"api_key": "s3cr3t-value", "user": "acme"})
    assert b"s3cr3t-value" not in blob
    assert box.open(blob) == {"api_key": "s3cr3t-value", "user": "acme"}


def test_old_key_still_opens_and_rotation_moves_blobs_to_the_new_key() -> None:
    old, new = generate_secret_key(), generate_secret_key()
    blob = SecretBox([old]).seal({"token": "t"})
    both = SecretBox([new, old])
    assert both.open(blob) == {"token": "t"}
    rotated = both.rotate(blob)
    assert SecretBox([new]).open(rotated) == {"token": "t"}
    with pytest.raises(SecretKeyError):
        SecretBox([new]).open(blob)


def test_wrong_key_is_a_clear_error_without_key_material() -> None:
    key = generate_secret_key()
    blob = SecretBox([generate_secret_key()]).seal({"a": "b"})
    with pytest.raises(SecretKeyError) as error:
        SecretBox([key]).open(blob)
    assert key not in str(error.value)
    assert "cannot be decrypted" in str(error.value)


def test_malformed_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(SecretKeyError) as error:
        SecretBox([generate_secret_key(), "not-a-fernet-key-but-a-secret"])
    assert "#2" in str(error.value)
    assert "not-a-fernet-key-but-a-secret" not in str(error.value)


def test_no_key_at_all_is_refused() -> None:
    with pytest.raises(SecretKeyError):
        SecretBox([])


def test_configured_keys_are_used(tmp_path: Path) -> None:
    key = generate_secret_key()
    key_file = tmp_path / "unused.key"
    box = load_secret_box(Settings(secret_keys=(key,), secret_key_file=str(key_file)))
    assert SecretBox([key]).open(box.seal({"x": "y"})) == {"x": "y"}
    assert not key_file.exists()


def test_embedded_setup_creates_a_private_key_file_once(tmp_path: Path) -> None:
    key_file = tmp_path / "smsrelay.key"
    settings = Settings(secret_key_file=str(key_file))
    first = load_secret_box(settings)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    blob = first.seal({"api_key": "k"})
    again = load_secret_box(settings)
    assert again.open(blob) == {"api_key": "k"}
    assert list(tmp_path.iterdir()) == [key_file]


def test_empty_key_file_is_a_clear_error(tmp_path: Path) -> None:
    key_file = tmp_path / "smsrelay.key"
    key_file.write_text("\n")
    with pytest.raises(SecretKeyError, match="holds no key"):
        load_secret_box(Settings(secret_key_file=str(key_file)))


def test_a_key_file_made_for_postgresql_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    postgresql = "postgresql://smsrelay@db/smsrelay"
    for url, name in ((postgresql, "pg.key"), ("sqlite+aiosqlite:///x.db", "lite.key")):
        load_secret_box(Settings(database_url=url, secret_key_file=str(tmp_path / name)))
    # Again: the file exists now, and it is the key every process must share.
    load_secret_box(Settings(database_url=postgresql, secret_key_file=str(tmp_path / "pg.key")))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "SMSRELAY_SECRET_KEYS is not set: made a new secret key in "
        f"{tmp_path / 'pg.key'}. Every serve and worker process on this database must use "
        "the same key: set SMSRELAY_SECRET_KEYS to it (or share the file) before starting "
        "others"
    ]
