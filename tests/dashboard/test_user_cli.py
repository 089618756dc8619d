"""`smsrelay user`: dashboard users from the command line (password prompted or given)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner

from smsrelay.cli import app
from smsrelay.store.database import open_database
from smsrelay.store.users import User, authenticate_user

runner = CliRunner()


def _can_sign_in(url: str, name: str, password: str) -> bool:
    async def check() -> User | None:
        db = open_database(url)
        try:
            return await authenticate_user(db, name, password)
        finally:
            await db.close()

    return asyncio.run(check()) is not None


def test_users_are_created_listed_changed_and_deleted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/smsrelay.db"
    env = {"SMSRELAY_DATABASE_URL": url, "SMSRELAY_SECRET_KEY_FILE": str(tmp_path / "key")}

    given = runner.invoke(app, ["user", "create", "maya", "--password", "first password"], env=env)
    assert given.exit_code == 0, given.output
    prompted = runner.invoke(
        app, ["user", "create", "li"], input="second password\nsecond password\n", env=env
    )
    assert prompted.exit_code == 0, prompted.output
    assert "second password" not in prompted.output
    assert _can_sign_in(url, "maya", "first password")
    assert _can_sign_in(url, "li", "second password")

    taken = runner.invoke(app, ["user", "create", "maya", "--password", "x" * 12], env=env)
    assert taken.exit_code == 1 and "already exists" in taken.output
    short = runner.invoke(app, ["user", "create", "kim", "--password", "short"], env=env)
    assert short.exit_code == 1 and "at least 8 characters" in short.output

    listed = runner.invoke(app, ["user", "list"], env=env)
    assert listed.exit_code == 0
    assert [line.split("\t")[0] for line in listed.output.splitlines()] == ["li", "maya"]

    changed = runner.invoke(
        app, ["user", "password", "maya", "--password", "new password"], env=env
    )
    assert changed.exit_code == 0
    assert not _can_sign_in(url, "maya", "first password")
    assert _can_sign_in(url, "maya", "new password")

    assert runner.invoke(app, ["user", "delete", "li"], env=env).exit_code == 0
    assert runner.invoke(app, ["user", "delete", "li"], env=env).exit_code == 1
