"""Settings: a YAML file named by SMSRELAY_CONFIG, then the environment, then overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from smsrelay.settings import load_settings


def test_the_config_file_is_read_and_the_environment_wins_over_it(tmp_path: Path) -> None:
    config = tmp_path / "smsrelay.yaml"
    config.write_text(
        "database_url: postgresql://smsrelay@db/smsrelay\n"
        "allow_hosts: [sms.internal, 10.0.0.0/8]\n"
        "sandbox: false\n"
        "claim_batch: 200\n"
        "lease_seconds: 30\n"
        "port: 9000\n"
    )
    settings = load_settings({"SMSRELAY_CONFIG": str(config), "SMSRELAY_PORT": "9100"})
    assert settings.database_url == "postgresql://smsrelay@db/smsrelay"
    assert settings.allow_hosts == ("sms.internal", "10.0.0.0/8")
    assert settings.sandbox is False
    assert (settings.claim_batch, settings.lease_seconds) == (200, 30.0)
    assert settings.port == 9100  # the environment over the file
    assert load_settings({"SMSRELAY_CONFIG": str(config)}, port=1234).port == 1234


def test_a_config_file_that_is_missing_wrong_or_unknown_is_refused_plainly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"SMSRELAY_CONFIG: .*nowhere.yaml does not exist"):
        load_settings({"SMSRELAY_CONFIG": str(tmp_path / "nowhere.yaml")})
    listed = tmp_path / "list.yaml"
    listed.write_text("- port\n")
    with pytest.raises(ValueError, match="must hold a mapping of settings"):
        load_settings({"SMSRELAY_CONFIG": str(listed)})
    typo = tmp_path / "typo.yaml"
    typo.write_text("databse_url: sqlite:///x.db\n")
    with pytest.raises(ValueError, match=r"unknown setting 'databse_url' \(known: .*database_url"):
        load_settings({"SMSRELAY_CONFIG": str(typo)})
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("claim_batch: lots\n")
    with pytest.raises(ValueError, match="SMSRELAY_CLAIM_BATCH: expected a whole number"):
        load_settings({"SMSRELAY_CONFIG": str(wrong)})


def test_the_sandbox_is_on_by_default_with_sqlite_only() -> None:
    assert load_settings({}).sandbox is True  # the embedded setup
    postgresql = {"SMSRELAY_DATABASE_URL": "postgresql://smsrelay@db/smsrelay"}
    assert load_settings(postgresql).sandbox is False
    assert load_settings({**postgresql, "SMSRELAY_SANDBOX": "true"}).sandbox is True
    assert load_settings(postgresql, sandbox=True).sandbox is True  # serve --sandbox
    assert load_settings({"SMSRELAY_SANDBOX": "off"}).sandbox is False
    assert load_settings({}, database_url="postgresql://x@y/z").sandbox is False
