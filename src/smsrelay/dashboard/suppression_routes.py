"""The suppression list: numbers kept from promotional sends; add one by hand, release one.

Numbers are read as `/v1/suppressions` reads them (E.164, the server's default region for
numbers without +), listed in number order a page at a time, as the API pages them.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse, Response

from smsrelay.connectors.phone import InvalidPhoneNumber, normalise_phone
from smsrelay.dashboard.pages import Page, PageDep
from smsrelay.runtime import Runtime
from smsrelay.store.suppression import list_suppressions, release_number, suppress_number

router = APIRouter(prefix="/suppressions")
PAGE_SIZE = 100
MAX_NUMBER_CHARS = 40
MAX_REASON_CHARS = 500


def read_number(raw: str, runtime: Runtime) -> str:
    """A typed number in E.164, as the API reads it; raises InvalidPhoneNumber."""
    return normalise_phone(raw, runtime.settings.default_region or None)


def check_suppression_form(number: str, reason: str) -> dict[str, str]:
    """The problems of the add form before the number is read, by field (pure)."""
    errors: dict[str, str] = {}
    if not number:
        errors["number"] = "give the phone number to suppress"
    elif len(number) > MAX_NUMBER_CHARS:
        errors["number"] = f"at most {MAX_NUMBER_CHARS} characters"
    if len(reason) > MAX_REASON_CHARS:
        errors["reason"] = f"at most {MAX_REASON_CHARS} characters"
    return errors


async def _suppressions_page(
    p: Page,
    *,
    after: str = "",
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    records, next_cursor = await list_suppressions(
        p.runtime.database, after=after or None, limit=PAGE_SIZE
    )
    return p.render(
        "suppressions.html",
        status=status,
        nav="suppressions",
        suppressions=records,
        paged=bool(after),
        next_after=next_cursor,
        default_region=p.runtime.settings.default_region,
        values=values or {},
        errors=errors or {},
    )


@router.get("")
async def suppressions_page(
    p: Page = PageDep, after: str = Query(default="", max_length=MAX_NUMBER_CHARS)
) -> HTMLResponse:
    """Suppressed numbers in number order, and the form to add one."""
    return await _suppressions_page(p, after=after)


@router.post("", response_model=None)
async def add_suppression(p: Page = PageDep) -> Response:
    """Suppress a number by hand; an automatic suppression becomes a manual one."""
    data = await p.form()
    values = {"number": data.get("number"), "reason": data.get("reason")}
    errors = check_suppression_form(values["number"], values["reason"])
    number = ""
    if not errors:
        try:
            number = read_number(values["number"], p.runtime)
        except InvalidPhoneNumber as exc:
            errors["number"] = str(exc)
    if errors:
        return await _suppressions_page(p, values=values, errors=errors, status=422)
    _, created = await suppress_number(p.runtime.database, number, reason=values["reason"] or None)
    notice = (
        f"{number} is suppressed: promotional messages to it are refused."
        if created
        else f"{number} was already suppressed; it stays suppressed until released."
    )
    return p.redirect("/suppressions", notice=notice)


@router.post("/{number}/release", response_model=None)
async def release(number: str, p: Page = PageDep) -> Response:
    """Lift a suppression; the number's failure count starts again from zero."""
    await p.form()
    try:
        normalised = read_number(number, p.runtime)
    except InvalidPhoneNumber as exc:
        raise HTTPException(404, f"{number!r} is not a phone number: {exc}") from exc
    if not await release_number(p.runtime.database, normalised):
        raise HTTPException(404, f"{normalised} is not suppressed.")
    return p.redirect("/suppressions", notice=f"Released {normalised}: it may be sent to again.")
