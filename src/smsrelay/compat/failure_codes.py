"""CleverTap's delivery error codes (900–920), and which failure reasons map to each (pure).

CleverTap's generic SMS callback carries a `code` and a `description` for every `failed`
event; its dashboard groups failures by code. The codes and their descriptions are
CleverTap's (docs.clevertap.com, "Generic SMS" -> "Error Codes"; there is no 911); code 900
is for any error the table does not name, sent with the error's own description.

smsrelay knows a failure by a reason text: the provider's delivery-report reason (and
error code), or our own reason when the message never reached the provider
(`retries_exhausted: ...`, `missing_parameter:NAME`, the provider's rejection message).
`clevertap_failure` reads that text against `FAILURE_RULES`, first match wins, so more
specific rules come first (NDNC before DND, "force expired" before "expired", DLT sender,
entity, template and consent before DLT in general).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

OTHER_FAILURE_CODE = "900"


@dataclass(frozen=True, slots=True)
class FailureCode:
    """One row of CleverTap's error-code table and the reason patterns that select it."""

    code: str
    description: str
    patterns: tuple[str, ...]

    def matches(self, text: str) -> bool:
        """Whether a lower-cased reason text selects this code."""
        return any(re.search(pattern, text) for pattern in self.patterns)


# Patterns are regular expressions over the lower-cased reason (and error code), with
# `_` and `-` read as spaces.
FAILURE_RULES: tuple[FailureCode, ...] = (
    FailureCode(
        "913",
        "NDNC Rejected",
        (r"\bndnc\b", r"\bncpr\b", r"national (do not|dnd) call"),
    ),
    FailureCode("901", "DND failure", (r"\bdnd\b", r"do not disturb")),
    FailureCode("902", "Failed spam detected", (r"\bspam\b",)),
    FailureCode(
        "903",
        "Failed rejected blacklist",
        (r"black ?list", r"block ?list", r"opt(ed)? ?out", r"unsubscribed", r"\bstop\b"),
    ),
    FailureCode(
        "909",
        "Failed DLT consent error",
        (r"\bconsent\b",),
    ),
    FailureCode(
        "907",
        "Entity blocked by DLT",
        (r"\bentity\b", r"\bpe ?id\b"),
    ),
    FailureCode(
        "908",
        "Template blocked by DLT",
        (r"dlt.*template", r"template.*(dlt|mismatch|not (registered|linked|found|approved))"),
    ),
    FailureCode(
        "906",
        "Blocked by DLT",
        (r"dlt.*(header|sender)", r"(header|sender ?id).*(dlt|blocked|not registered)"),
    ),
    FailureCode("919", "DLT Failure", (r"\bdlt\b",)),
    FailureCode(
        "920",
        "URL not whitelisted",
        (r"url.*not white ?listed", r"url.*not allowed", r"white ?list"),
    ),
    FailureCode("918", "Duplicate Message Drop", (r"duplicate",)),
    FailureCode("917", "Force Expired", (r"force(d)? ?expir",)),
    FailureCode("916", "Expired", (r"expir", r"\bttl\b", r"validity")),
    FailureCode(
        "912",
        "Message Inbox Full",
        (r"inbox full", r"memory (capacity )?(exceeded|full)", r"storage full"),
    ),
    FailureCode(
        "910",
        "Invalid subscriber",
        (
            r"invalid (destination|number|msisdn|subscriber|recipient|phone)",
            r"unknown (subscriber|number|msisdn)",
            r"(number|subscriber|msisdn) (does not exist|not found|inactive|deactivated)",
            r"not a (valid )?(mobile|phone) number",
            r"unallocated",
        ),
    ),
    FailureCode(
        "905",
        "Failed subscriber error",
        (
            r"absent (subscriber|handset)",
            r"subscriber",
            r"handset",
            r"switched off",
            r"out of coverage",
            r"roaming",
            r"insufficient balance",
        ),
    ),
    FailureCode("915", "Dropped", (r"\bdropped\b", r"barred", r"\bbanned\b")),
    FailureCode(
        "904",
        "Failed system error",
        (
            r"retries exhausted",
            r"system error",
            r"internal (server )?error",
            r"\btimeout\b",
            r"timed out",
            r"credentials failing",
            r"\bhttp 5\d\d\b",
            r"connection",
        ),
    ),
    FailureCode("914", "Undelivered", (r"undeliver", r"not delivered")),
)

# What an undelivered message with no reason at all is reported as.
UNDELIVERED = next(rule for rule in FAILURE_RULES if rule.code == "914")


def _normalised(text: str) -> str:
    return re.sub(r"[_\-]+", " ", text.lower())


def clevertap_failure(
    reason: str | None, error_code: str | None = None, *, undelivered: bool = False
) -> tuple[str, str]:
    """The CleverTap `(code, description)` for a failure reason.

    `undelivered` says the provider reported a final non-delivery (rather than our failing
    to send): with no recognisable reason that is 914 "Undelivered". Anything else not in
    the table is 900 with the reason itself as description, as CleverTap asks.
    """
    haystack = _normalised(" ".join(part for part in (reason, error_code) if part))
    for rule in FAILURE_RULES:
        if haystack and rule.matches(haystack):
            return rule.code, rule.description
    if undelivered and not reason:
        return UNDELIVERED.code, UNDELIVERED.description
    return OTHER_FAILURE_CODE, (reason or error_code or "Not able to send message to this phone")


__all__ = ["FAILURE_RULES", "OTHER_FAILURE_CODE", "FailureCode", "clevertap_failure"]
