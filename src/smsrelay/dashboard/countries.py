"""Countries for phone-number inputs: region code, name and calling code, by name."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import phonenumbers
from phonenumbers import geocoder


@dataclass(frozen=True, slots=True)
class Country:
    """A region phone numbers can be typed in nationally."""

    region: str  # ISO 3166 alpha-2, as phonenumbers names regions
    name: str
    calling_code: int

    @property
    def label(self) -> str:
        return f"{self.name} (+{self.calling_code})"


@functools.cache
def countries() -> tuple[Country, ...]:
    """Every region phonenumbers knows, sorted by English name."""
    found: list[Country] = []
    for region in phonenumbers.SUPPORTED_REGIONS:
        example = phonenumbers.example_number(region)
        name = geocoder.country_name_for_number(example, "en") if example else ""
        found.append(Country(region, name or region, phonenumbers.country_code_for_region(region)))
    return tuple(sorted(found, key=lambda c: c.name))


def known_region(region: str) -> str | None:
    """The region code if phonenumbers knows it (upper-cased), else None."""
    code = region.strip().upper()
    return code if code in phonenumbers.SUPPORTED_REGIONS else None
