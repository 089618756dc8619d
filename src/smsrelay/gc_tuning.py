"""Garbage-collector settings for the long-running processes (`serve`, `worker`).

A batch of 1000 messages keeps tens of thousands of objects alive while it is validated,
sent or stored, so CPython's default thresholds (700, 10, 10) run a young collection every
few hundred allocations and a full one every few batches; a full collection walks every
object start-up made (modules, SQLAlchemy's compiled statements, pydantic's validators).
Measured with `bench/intake_batch.py` and `bench/dispatch_batched.py` (bench/README.md).

Called once, after start-up: the objects alive then are moved to the permanent generation
(`gc.freeze`), which collections skip, and the young generation is collected less often.
Reference cycles are still found and freed, only later.
"""

from __future__ import annotations

import gc

# Allocations (minus deallocations) between young collections; then 10 young per middle
# and 10 middle per full collection, as CPython's defaults.
YOUNG_THRESHOLD = 20_000


def tune_garbage_collector() -> None:
    """Freeze what start-up allocated and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
