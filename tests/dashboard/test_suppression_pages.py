"""The suppression list page over HTTP on a real server: list, add by hand, release."""

from __future__ import annotations

from pathlib import Path

from dashboard.signed_in import signed_in_gateway
from smsrelay.store.suppression import is_suppressed, list_suppressions, suppress_number

NUMBER = "+4915112345678"


async def test_a_number_added_by_hand_is_listed_escaped_and_released_with_csrf(
    database_url: str, tmp_path: Path
) -> None:
    async with signed_in_gateway(database_url, tmp_path) as (gw, client, csrf):
        db = gw.runtime.database
        empty = await client.get("/ui/suppressions")
        assert empty.status_code == 200
        assert "No number is suppressed." in empty.text

        # Without this session's CSRF token nothing is stored.
        bare = await client.post("/ui/suppressions", data={"number": NUMBER})
        assert bare.status_code == 403
        assert await list_suppressions(db) == ([], None)

        added = await client.post(
            "/ui/suppressions",
            data={"csrf_token": csrf, "number": "0049 151 1234 5678", "reason": "<b>STOP</b>"},
        )
        assert added.status_code == 303, added.text
        record = await is_suppressed(db, NUMBER)
        assert record is not None
        assert (record.source, record.reason) == ("manual", "<b>STOP</b>")
        page = await client.get(added.headers["location"])
        assert f"{NUMBER} is suppressed" in page.text
        assert "<b>STOP</b>" not in page.text and "&lt;b&gt;STOP&lt;/b&gt;" in page.text
        assert 'action="/ui/suppressions/%2B4915112345678/release"' in page.text

        twice = await client.post("/ui/suppressions", data={"csrf_token": csrf, "number": NUMBER})
        assert twice.status_code == 303
        notice = await client.get("/ui/suppressions")
        assert "was already suppressed" in notice.text
        kept = await is_suppressed(db, NUMBER)
        assert kept is not None and kept.reason == "<b>STOP</b>"

        release = "/ui/suppressions/%2B4915112345678/release"
        assert (await client.post(release)).status_code == 403
        forged = await client.post(release, data={"csrf_token": "x" * 43})
        assert forged.status_code == 403
        assert await is_suppressed(db, NUMBER) is not None

        released = await client.post(release, data={"csrf_token": csrf})
        assert released.status_code == 303
        assert await is_suppressed(db, NUMBER) is None
        after = await client.get("/ui/suppressions")
        assert f"Released {NUMBER}" in after.text
        assert "No number is suppressed." in after.text
        again = await client.post(release, data={"csrf_token": csrf})
        assert again.status_code == 404
        assert "is not suppressed" in again.text


async def test_a_bad_number_or_reason_is_shown_by_its_field_and_stores_nothing(
    database_url: str, tmp_path: Path
) -> None:
    async with signed_in_gateway(database_url, tmp_path) as (gw, client, csrf):
        cases = [
            ({"number": ""}, "number", "give the phone number to suppress"),
            ({"number": "12345"}, "number", "missing country code"),
            ({"number": "<script>alert()</script>"}, "number", "is not a phone number"),
            ({"number": "+1" + "5" * 45}, "number", "at most 40 characters"),
            ({"number": NUMBER, "reason": "r" * 501}, "reason", "at most 500 characters"),
        ]
        for fields, field, message in cases:
            answer = await client.post("/ui/suppressions", data={"csrf_token": csrf, **fields})
            assert answer.status_code == 422, fields
            assert f'id="suppression-{field}-error">' in answer.text, fields
            error = answer.text.split(f'id="suppression-{field}-error">', 1)[1].split("</p>")[0]
            assert message in error, (fields, error)
            assert f'id="suppression-{field}" ' in answer.text
            assert 'aria-invalid="true"' in answer.text
            assert "<script>alert()</script>" not in answer.text
        shown = await client.post(
            "/ui/suppressions", data={"csrf_token": csrf, "number": "<script>alert()</script>"}
        )
        assert 'value="&lt;script&gt;alert()&lt;/script&gt;"' in shown.text
        assert await list_suppressions(gw.runtime.database) == ([], None)
        bad_release = await client.post(
            "/ui/suppressions/not-a-number/release", data={"csrf_token": csrf}
        )
        assert bad_release.status_code == 404


async def test_the_list_is_paged_in_number_order(database_url: str, tmp_path: Path) -> None:
    async with signed_in_gateway(database_url, tmp_path) as (gw, client, _):
        numbers = [f"+49151{i:08d}" for i in range(101)]
        for number in numbers:
            await suppress_number(gw.runtime.database, number, reason="bulk")
        first = await client.get("/ui/suppressions")
        assert first.text.count('aria-label="Release +49151') == 100
        assert numbers[99] in first.text and numbers[100] not in first.text
        assert f'href="/ui/suppressions?after=%2B49151{99:08d}"' in first.text
        second = await client.get(f"/ui/suppressions?after=%2B49151{99:08d}")
        assert second.text.count('aria-label="Release +49151') == 1
        assert numbers[100] in second.text
        assert 'href="/ui/suppressions">First numbers' in second.text
        assert 'rel="next"' not in second.text
