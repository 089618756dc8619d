"""Charts as SVG, drawn on the server: a funnel, a daily rate chart, a horizontal bar chart.

Pure functions from numbers to markup (every text escaped). Each chart scales with its
container (viewBox, width 100%), carries a <title> and <desc> for screen readers, and a
<title> per bar for the exact figures on hover. The pages add a data table beside each.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape


@dataclass(frozen=True, slots=True)
class FunnelStep:
    """One step of the funnel: its label and how many messages reached it."""

    label: str
    count: int


@dataclass(frozen=True, slots=True)
class DailyRate:
    """One day: messages sent, delivered, and settled (delivered, undelivered, unconfirmed)."""

    day: str  # YYYY-MM-DD
    sent: int
    delivered: int
    settled: int

    @property
    def rate(self) -> float | None:
        """Delivered out of settled (None when none settled yet)."""
        return self.delivered / self.settled if self.settled else None


def _svg(width: int, height: int, title: str, desc: str, body: list[str], css: str) -> Markup:
    ident = f"chart-{zlib.crc32((title + desc).encode()):08x}"
    head = (
        f'<svg class="chart {css}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{ident}-t {ident}-d" preserveAspectRatio="xMinYMin meet">'
        f'<title id="{ident}-t">{escape(title)}</title><desc id="{ident}-d">{escape(desc)}</desc>'
    )
    return Markup(head + "".join(body) + "</svg>")


def _share(part: int, whole: int) -> str:
    return f"{part / whole * 100:.1f} %" if whole else "—"


def funnel_chart(steps: Sequence[FunnelStep], *, title: str) -> Markup:
    """Horizontal bars, one per step, as wide as their share of the first step."""
    width, row, label_w = 440, 46, 104
    height = row * len(steps) + 8
    first = steps[0].count if steps else 0
    body: list[str] = []
    for index, step in enumerate(steps):
        y = 4 + index * row
        share = step.count / first if first else 0.0
        bar = max(2.0, (width - label_w - 10) * share) if step.count else 0.0
        tip = f"{step.label}: {step.count:,} ({_share(step.count, first)} of {steps[0].label})"
        # The figure goes inside a bar wide enough to hold it, else just after it.
        inside = bar >= 130
        value_x = label_w + 8 if inside else label_w + bar + 6
        value_class = "value inside" if inside else "value"
        body.append(
            f'<g class="step step-{index}"><title>{escape(tip)}</title>'
            f'<text x="0" y="{y + 27}" class="label">{escape(step.label)}</text>'
            f'<rect x="{label_w}" y="{y + 6}" width="{bar:.1f}" height="30" rx="3" class="bar"/>'
            f'<text x="{value_x:.1f}" y="{y + 27}" class="{value_class}">'
            f"{step.count:,} · {escape(_share(step.count, first))}</text></g>"
        )
    desc = "; ".join(f"{s.label} {s.count:,}" for s in steps)
    return _svg(width, height, title, desc, body, "funnel")


def rate_chart(days: Sequence[DailyRate], *, title: str) -> Markup:
    """One column per day: the delivery rate (0-100 %), its volumes in the tooltip."""
    width, height = 460, 220
    left, right, top, bottom = 54, 8, 10, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    body: list[str] = []
    for pct in (0, 50, 100):
        y = top + plot_h * (1 - pct / 100)
        body.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" class="axis" text-anchor="end">{pct} %</text>'
        )
    count = max(1, len(days))
    slot = plot_w / count
    bar_w = max(1.0, slot * 0.7)
    label_every = max(1, round(count / 6))
    for index, day in enumerate(days):
        x = left + index * slot + (slot - bar_w) / 2
        rate = day.rate
        tip = (
            f"{day.day}: {_share(day.delivered, day.settled)} delivered "
            f"({day.delivered:,} of {day.settled:,} settled; {day.sent:,} sent)"
        )
        if rate is None:
            body.append(
                f"<g><title>{escape(day.day)}: no settled messages</title>"
                f'<rect x="{x:.1f}" y="{top + plot_h - 1}" width="{bar_w:.1f}" height="1" '
                f'class="empty"/></g>'
            )
        else:
            h = max(1.0, plot_h * rate)
            body.append(
                f'<g><title>{escape(tip)}</title><rect x="{x:.1f}" y="{top + plot_h - h:.1f}" '
                f'width="{bar_w:.1f}" height="{h:.1f}" class="bar"/></g>'
            )
        if index % label_every == 0:
            body.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{height - 12}" class="axis" '
                f'text-anchor="middle">{escape(day.day[5:])}</text>'
            )
    rated = [d for d in days if d.rate is not None]
    desc = (
        f"{len(days)} days; delivery rate from "
        f"{min(d.rate or 0 for d in rated) * 100:.1f} % to {max(d.rate or 0 for d in rated) * 100:.1f} %"
        if rated
        else "no message of this period is settled yet"
    )
    return _svg(width, height, title, desc, body, "rates")


def bar_chart(items: Sequence[tuple[str, int]], *, title: str) -> Markup:
    """Horizontal bars for labelled counts (failure reasons), largest first as given."""
    width, row = 440, 30
    height = max(row, row * len(items)) + 4
    largest = max((count for _, count in items), default=0)
    body: list[str] = []
    for index, (label, count) in enumerate(items):
        y = 2 + index * row
        bar = max(2.0, (width - 50) * count / largest) if largest else 0.0
        shown = label if len(label) <= 48 else label[:47] + "…"
        body.append(
            f"<g><title>{escape(label)}: {count:,}</title>"
            f'<rect x="0" y="{y + 2}" width="{bar:.1f}" height="{row - 6}" rx="2" class="bar"/>'
            f'<text x="6" y="{y + row / 2 + 3:.1f}" class="label">{escape(shown)}</text>'
            f'<text x="{width - 4}" y="{y + row / 2 + 3:.1f}" class="value" text-anchor="end">'
            f"{count:,}</text></g>"
        )
    if not items:
        body.append(f'<text x="0" y="{row / 2 + 4}" class="label">No failures.</text>')
    desc = "; ".join(f"{label}: {count:,}" for label, count in items) or "no failures"
    return _svg(width, height, title, desc, body, "bars")
